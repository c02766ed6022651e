//! Mobile multi-query attention as ONNX nodes, step for step as
//! [`MqaBlock::forward`](crate::model::blocks) computes it: input batch norm, 1×1 projections
//! (key and value optionally down-sampled by a strided depthwise conv + BN), one shared key and
//! value head, `softmax(q·k / √kd)·v`, output projection, layer scale, residual.

use super::emit::{conv_out, Emitter};
use super::graph::Attr;
use crate::space::lower::{KvSpec, MqaSpec};
use anyhow::Result;

impl Emitter {
    /// The key or value branch; returns its output and its spatial size.
    fn kv(&mut self, xn: &str, spec: &KvSpec, hw: (usize, usize)) -> Result<(String, usize)> {
        let (x, p) = match &spec.down {
            Some(d) => {
                let (k, s) = (d.conv.kernel, d.conv.stride);
                let p = conv_out(hw.0, k, s) * conv_out(hw.1, k, s);
                (self.conv_bn(xn, d)?, p)
            }
            None => (xn.to_string(), hw.0 * hw.1),
        };
        Ok((self.plain_conv(&x, &spec.proj)?, p))
    }

    fn reshape(&mut self, x: &str, name: &str, shape: &[i64]) -> String {
        let s = self.graph.constant_i64(&format!("{name}.shape"), shape);
        self.graph.node("Reshape", name, &[x, &s], vec![])
    }

    fn transpose(&mut self, x: &str, name: &str, perm: &[i64]) -> String {
        let perm = vec![("perm", Attr::Ints(perm.to_vec()))];
        self.graph.node("Transpose", name, &[x], perm)
    }

    /// The MQA block `spec` on `c` channels at spatial size `hw`; the batch axis stays dynamic
    /// (`0` in a `Reshape` shape copies it).
    pub fn mqa(&mut self, x: &str, spec: &MqaSpec, c: usize, hw: (usize, usize)) -> Result<String> {
        let (heads, kd, vd) = (
            spec.heads as i64,
            spec.key_dim as i64,
            spec.value_dim as i64,
        );
        let (h, w) = (hw.0 as i64, hw.1 as i64);
        let l = h * w;
        let a = &spec.attn;
        let xn = self.batch_norm(x, &spec.norm, c)?;
        // q: [B, heads·kd, H, W] → [B, heads, kd, L] → [B, heads, L, kd] → [B, heads·L, kd].
        let q = self.plain_conv(&xn, &spec.query)?;
        let q = self.reshape(&q, &format!("{a}.q_heads"), &[0, heads, kd, l]);
        let q = self.transpose(&q, &format!("{a}.q_t"), &[0, 1, 3, 2]);
        let q = self.reshape(&q, &format!("{a}.q"), &[0, heads * l, kd]);
        // k: [B, kd, P]; v: [B, vd, P] → [B, P, vd].
        let (k, p) = self.kv(&xn, &spec.key, hw)?;
        let k = self.reshape(&k, &format!("{a}.k"), &[0, kd, p as i64]);
        let (v, p) = self.kv(&xn, &spec.value, hw)?;
        let v = self.reshape(&v, &format!("{a}.v_flat"), &[0, vd, p as i64]);
        let v = self.transpose(&v, &format!("{a}.v"), &[0, 2, 1]);
        let g = &mut self.graph;
        let scale = g.scalar(
            &format!("attn.scale_kd{kd}"),
            (1.0 / (kd as f64).sqrt()) as f32,
        );
        let s = g.node("MatMul", &format!("{a}.qk"), &[&q, &k], vec![]);
        let s = g.node("Mul", &format!("{a}.scaled"), &[&s, &scale], vec![]);
        let s = g.node(
            "Softmax",
            &format!("{a}.softmax"),
            &[&s],
            vec![("axis", Attr::Int(-1))],
        );
        let o = g.node("MatMul", &format!("{a}.av"), &[&s, &v], vec![]);
        // [B, heads·L, vd] → [B, heads, L, vd] → [B, heads, vd, L] → [B, heads·vd, H, W].
        let o = self.reshape(&o, &format!("{a}.o_heads"), &[0, heads, l, vd]);
        let o = self.transpose(&o, &format!("{a}.o_t"), &[0, 1, 3, 2]);
        let o = self.reshape(&o, &format!("{a}.o"), &[0, heads * vd, h, w]);
        let gamma = self.foldable_gamma(&spec.layer_scale, c)?;
        let mut y = self.plain_conv_scaled(&o, &spec.output, gamma.as_deref())?;
        if let (Some(ls), None) = (&spec.layer_scale, &gamma) {
            y = self.layer_scale(&y, ls, c)?;
        }
        let name = format!("{}.residual", a.trim_end_matches(".attn"));
        Ok(self.graph.node("Add", &name, &[&y, x], vec![]))
    }
}
