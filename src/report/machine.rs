//! The machine a measurement was taken on, for every speed figure a report gives.

/// The CPU model (from `/proc/cpuinfo`) and the number of logical cores, e.g.
/// `"Intel(R) Xeon(R) Processor @ 2.80GHz, 2 cores"`.
pub fn describe() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model}, {cores} cores")
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_the_cores() {
        assert!(super::describe().ends_with(" cores"));
    }
}
