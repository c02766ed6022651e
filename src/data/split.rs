//! Seeded train/validation splits.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::dataset::Dataset;
use super::error::DataError;

/// Splits `0..n` into `(train, val)` index lists, `val` holding `val_size` indices drawn
/// uniformly with `StdRng::seed_from_u64(seed)`. Both lists are sorted and disjoint, and
/// together cover `0..n`. Errors if `val_size >= n` (the training set would be empty).
pub fn train_val_split(
    n: usize,
    val_size: usize,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>), DataError> {
    if val_size >= n {
        return Err(DataError::InvalidSplit { n, val_size });
    }
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut StdRng::seed_from_u64(seed));
    let mut val = idx[..val_size].to_vec();
    let mut train = idx[val_size..].to_vec();
    val.sort_unstable();
    train.sort_unstable();
    Ok((train, val))
}

/// Splits a dataset into `(train, val)` datasets with [`train_val_split`]; the validation
/// part is renamed `"<family>/val"`.
pub fn split_dataset(
    ds: &Dataset,
    val_size: usize,
    seed: u64,
) -> Result<(Dataset, Dataset), DataError> {
    let (tr, va) = train_val_split(ds.n, val_size, seed)?;
    let train = ds.subset(&tr);
    let mut val = ds.subset(&va);
    let family = ds.name.split('/').next().unwrap_or(&ds.name);
    val.name = format!("{family}/val");
    Ok((train, val))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disjoint_complete_and_deterministic() {
        let (tr, va) = train_val_split(1000, 100, 7).unwrap();
        assert_eq!((tr.len(), va.len()), (900, 100));
        let mut all: Vec<usize> = tr.iter().chain(&va).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        assert!(tr.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            train_val_split(1000, 100, 7).unwrap(),
            (tr.clone(), va.clone())
        );
        let (_, va2) = train_val_split(1000, 100, 8).unwrap();
        assert_ne!(va, va2);
        // Not just the first or last indices.
        assert!(va.iter().any(|&i| i < 500) && va.iter().any(|&i| i >= 500));
    }

    #[test]
    fn rejects_too_large_validation() {
        assert!(matches!(
            train_val_split(10, 10, 0).unwrap_err(),
            DataError::InvalidSplit {
                n: 10,
                val_size: 10
            }
        ));
        assert!(train_val_split(10, 11, 0).is_err());
        let (tr, va) = train_val_split(10, 0, 0).unwrap();
        assert_eq!((tr.len(), va.len()), (10, 0));
    }

    #[test]
    fn split_dataset_names_val() {
        let ds = Dataset::new(
            "toy/train",
            (0..10).collect(),
            vec![0; 10],
            1,
            1,
            1,
            1,
            vec![],
        )
        .unwrap();
        let (tr, va) = split_dataset(&ds, 3, 1).unwrap();
        assert_eq!((tr.n, va.n), (7, 3));
        assert_eq!(va.name, "toy/val");
        let mut px: Vec<u8> = tr.images.iter().chain(&va.images).copied().collect();
        px.sort_unstable();
        assert_eq!(px, (0..10).collect::<Vec<u8>>());
    }
}
