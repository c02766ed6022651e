//! A small ONNX graph builder: constants, nodes with generated value names, typed inputs and
//! outputs. Values are named after the node that makes them (timm layer names).

use super::proto::{
    attribute_type, data_type, AttributeProto, DimValue, Dimension, GraphProto, NodeProto,
    TensorProto, TensorShapeProto, TypeProto, TypeProtoTensor, ValueInfoProto,
};
use std::collections::{HashMap, HashSet};

/// One dimension of a graph input or output.
#[derive(Debug, Clone, PartialEq)]
pub enum Dim {
    Fixed(usize),
    /// A named dynamic axis (ONNX `dim_param`), e.g. `batch`.
    Named(String),
}

/// A node attribute value.
pub enum Attr {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
}

/// The graph under construction.
#[derive(Default)]
pub struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    names: HashSet<String>,
    /// Scalar constants already made, by name.
    scalars: HashMap<String, String>,
}

/// A float tensor value info with the given shape.
fn value_info(name: &str, shape: &[Dim]) -> ValueInfoProto {
    let dim = shape
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(n) => DimValue::DimValue(*n as i64),
                Dim::Named(s) => DimValue::DimParam(s.clone()),
            }),
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
    }
}

fn attribute(name: &str, value: Attr) -> AttributeProto {
    let a = AttributeProto {
        name: name.into(),
        ..Default::default()
    };
    match value {
        Attr::Int(i) => AttributeProto {
            r#type: attribute_type::INT,
            i,
            ..a
        },
        Attr::Float(f) => AttributeProto {
            r#type: attribute_type::FLOAT,
            f,
            ..a
        },
        Attr::Ints(ints) => AttributeProto {
            r#type: attribute_type::INTS,
            ints,
            ..a
        },
    }
}

impl Graph {
    /// `base`, or `base_2`, `base_3`, … when taken: every value name is unique.
    fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut n = 1;
        while self.names.contains(&name) {
            n += 1;
            name = format!("{base}_{n}");
        }
        self.names.insert(name.clone());
        name
    }

    /// Declares a float graph input named `name`.
    pub fn input(&mut self, name: &str, shape: &[Dim]) -> String {
        let name = self.fresh(name);
        self.inputs.push(value_info(&name, shape));
        name
    }

    /// Declares the existing value `value` a graph output named `name` (through an `Identity`).
    pub fn output(&mut self, value: &str, name: &str, shape: &[Dim]) {
        let name = self.fresh(name);
        self.nodes.push(NodeProto {
            input: vec![value.into()],
            output: vec![name.clone()],
            name: name.clone(),
            op_type: "Identity".into(),
            attribute: vec![],
        });
        self.outputs.push(value_info(&name, shape));
    }

    /// A float constant (weights, scales) of shape `dims`.
    pub fn constant(&mut self, name: &str, dims: &[usize], values: &[f32]) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), values.len());
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push_constant(name, dims, data_type::FLOAT, raw)
    }

    /// A shared float scalar constant (made once per `name`).
    pub fn scalar(&mut self, name: &str, value: f32) -> String {
        if let Some(v) = self.scalars.get(name) {
            return v.clone();
        }
        let v = self.constant(name, &[], &[value]);
        self.scalars.insert(name.into(), v.clone());
        v
    }

    /// An int64 constant (shapes for `Reshape`).
    pub fn constant_i64(&mut self, name: &str, values: &[i64]) -> String {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push_constant(name, &[values.len()], data_type::INT64, raw)
    }

    fn push_constant(&mut self, name: &str, dims: &[usize], dt: i32, raw: Vec<u8>) -> String {
        let name = self.fresh(name);
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: dt,
            name: name.clone(),
            raw_data: raw,
        });
        name
    }

    /// Appends node `op` named (and with its single output named) after `name`; returns the output.
    pub fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        attrs: Vec<(&str, Attr)>,
    ) -> String {
        let out = self.fresh(name);
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: out.clone(),
            op_type: op.into(),
            attribute: attrs.into_iter().map(|(n, v)| attribute(n, v)).collect(),
        });
        out
    }

    /// The finished graph.
    pub fn finish(self, name: &str) -> GraphProto {
        GraphProto {
            node: self.nodes,
            name: name.into(),
            initializer: self.initializers,
            doc_string: String::new(),
            input: self.inputs,
            output: self.outputs,
        }
    }
}
