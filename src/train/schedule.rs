//! Learning-rate schedule: linear warm-up then cosine decay, evaluated per step.

/// Cosine schedule with linear warm-up.
#[derive(Debug, Clone, Copy)]
pub struct CosineSchedule {
    pub base_lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
}

impl CosineSchedule {
    /// Learning rate for 0-based `step`.
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.base_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let t = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
        self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_linearly_then_decays_to_min() {
        let s = CosineSchedule {
            base_lr: 1.0,
            min_lr: 0.01,
            warmup_steps: 4,
            total_steps: 104,
        };
        assert!((s.lr(0) - 0.25).abs() < 1e-12);
        assert!((s.lr(3) - 1.0).abs() < 1e-12);
        assert!((s.lr(4) - 1.0).abs() < 1e-12);
        assert!((s.lr(54) - 0.505).abs() < 1e-9);
        assert!((s.lr(104) - 0.01).abs() < 1e-12);
        assert!(s.lr(30) > s.lr(31));
    }
}
