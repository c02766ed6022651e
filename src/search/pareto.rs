//! Pareto machinery over minimized objective vectors: (constrained) domination, non-dominated
//! sorting, crowding distance, and the 2-D hypervolume.

/// A point to rank: objectives (all minimized) and total constraint violation (0 = feasible).
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub objectives: Vec<f64>,
    pub violation: f64,
}

/// Plain Pareto domination: no worse everywhere, better somewhere.
pub fn dominates(a: &[f64], b: &[f64]) -> bool {
    a.iter().zip(b).all(|(x, y)| x <= y) && a.iter().zip(b).any(|(x, y)| x < y)
}

/// Deb's constrained domination: a feasible point beats an infeasible one; of two infeasible
/// points the smaller violation wins; two feasible points compare by Pareto domination.
pub fn constrained_dominates(a: &Point, b: &Point) -> bool {
    match (a.violation <= 0.0, b.violation <= 0.0) {
        (true, false) => true,
        (false, true) => false,
        (false, false) => a.violation < b.violation,
        (true, true) => dominates(&a.objectives, &b.objectives),
    }
}

/// Fast non-dominated sorting (Deb et al. 2002) under constrained domination: fronts of indices,
/// best first.
pub fn non_dominated_sort(points: &[Point]) -> Vec<Vec<usize>> {
    let n = points.len();
    let mut dominated_by: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut count = vec![0usize; n];
    for i in 0..n {
        for j in 0..n {
            if i != j && constrained_dominates(&points[i], &points[j]) {
                dominated_by[i].push(j);
            } else if i != j && constrained_dominates(&points[j], &points[i]) {
                count[i] += 1;
            }
        }
    }
    let mut fronts = Vec::new();
    let mut current: Vec<usize> = (0..n).filter(|&i| count[i] == 0).collect();
    while !current.is_empty() {
        let mut next = Vec::new();
        for &i in &current {
            for &j in &dominated_by[i] {
                count[j] -= 1;
                if count[j] == 0 {
                    next.push(j);
                }
            }
        }
        fronts.push(current);
        current = next;
    }
    fronts
}

/// Rank (0 = first front) of every point.
pub fn ranks(points: &[Point]) -> Vec<usize> {
    let mut r = vec![0; points.len()];
    for (k, front) in non_dominated_sort(points).iter().enumerate() {
        for &i in front {
            r[i] = k;
        }
    }
    r
}

/// Crowding distance of the members of one front (same order as `front`).
pub fn crowding_distance(points: &[Point], front: &[usize]) -> Vec<f64> {
    let n = front.len();
    let mut d = vec![0f64; n];
    if n <= 2 {
        return vec![f64::INFINITY; n];
    }
    let m = points[front[0]].objectives.len();
    for k in 0..m {
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| {
            points[front[a]].objectives[k].total_cmp(&points[front[b]].objectives[k])
        });
        let lo = points[front[order[0]]].objectives[k];
        let hi = points[front[order[n - 1]]].objectives[k];
        d[order[0]] = f64::INFINITY;
        d[order[n - 1]] = f64::INFINITY;
        if hi > lo {
            for w in 1..n - 1 {
                let prev = points[front[order[w - 1]]].objectives[k];
                let next = points[front[order[w + 1]]].objectives[k];
                d[order[w]] += (next - prev) / (hi - lo);
            }
        }
    }
    d
}

/// Hypervolume dominated by 2-D minimized points with respect to `reference` (points that do not
/// dominate the reference contribute nothing).
pub fn hypervolume_2d(points: &[[f64; 2]], reference: [f64; 2]) -> f64 {
    let mut pts: Vec<[f64; 2]> = points
        .iter()
        .copied()
        .filter(|p| p[0] < reference[0] && p[1] < reference[1])
        .collect();
    pts.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
    let mut hv = 0.0;
    let mut best_y = reference[1];
    for p in pts {
        if p[1] < best_y {
            hv += (reference[0] - p[0]) * (best_y - p[1]);
            best_y = p[1];
        }
    }
    hv
}

/// Hypervolume dominated by 3-D minimized points with respect to `reference`: a sweep over the
/// third objective summing 2-D slices.
pub fn hypervolume_3d(points: &[[f64; 3]], reference: [f64; 3]) -> f64 {
    let mut pts: Vec<[f64; 3]> = points
        .iter()
        .copied()
        .filter(|p| p.iter().zip(&reference).all(|(x, r)| x < r))
        .collect();
    pts.sort_by(|a, b| a[2].total_cmp(&b[2]));
    let mut hv = 0.0;
    for i in 0..pts.len() {
        let next_z = pts.get(i + 1).map(|p| p[2]).unwrap_or(reference[2]);
        if next_z > pts[i][2] {
            let slice: Vec<[f64; 2]> = pts[..=i].iter().map(|p| [p[0], p[1]]).collect();
            hv += hypervolume_2d(&slice, [reference[0], reference[1]]) * (next_z - pts[i][2]);
        }
    }
    hv
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Indices of the points no other point dominates (plain Pareto domination).
    fn pareto_set(points: &[Vec<f64>]) -> Vec<usize> {
        let all: Vec<Point> = points
            .iter()
            .map(|o| Point {
                objectives: o.clone(),
                violation: 0.0,
            })
            .collect();
        let mut front = non_dominated_sort(&all)
            .into_iter()
            .next()
            .unwrap_or_default();
        front.sort_unstable();
        front
    }

    fn p(o: &[f64], v: f64) -> Point {
        Point {
            objectives: o.to_vec(),
            violation: v,
        }
    }

    #[test]
    fn sorting_finds_fronts_and_respects_constraints() {
        let pts = vec![
            p(&[1.0, 5.0], 0.0),
            p(&[2.0, 2.0], 0.0),
            p(&[3.0, 3.0], 0.0),
            p(&[0.0, 0.0], 1.0),
            p(&[5.0, 1.0], 0.0),
        ];
        let fronts = non_dominated_sort(&pts);
        assert_eq!(fronts[0], vec![0, 1, 4]);
        assert_eq!(fronts[1], vec![2]);
        assert_eq!(
            fronts[2],
            vec![3],
            "the infeasible point ranks last despite its objectives"
        );
        assert_eq!(ranks(&pts), vec![0, 0, 1, 2, 0]);
    }

    #[test]
    fn crowding_marks_extremes_infinite() {
        let pts = vec![
            p(&[1.0, 5.0], 0.0),
            p(&[2.0, 2.0], 0.0),
            p(&[5.0, 1.0], 0.0),
        ];
        let d = crowding_distance(&pts, &[0, 1, 2]);
        assert!(d[0].is_infinite() && d[2].is_infinite());
        assert!((d[1] - (4.0 / 4.0 + 4.0 / 4.0)).abs() < 1e-12);
    }

    #[test]
    fn pareto_set_equals_brute_force_on_random_points() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for trial in 0..200 {
            let dims = 2 + trial % 2;
            let n = 1 + trial % 40;
            // Coarse grid values so ties and duplicates happen.
            let pts: Vec<Vec<f64>> = (0..n)
                .map(|_| (0..dims).map(|_| rng.random_range(0..8) as f64).collect())
                .collect();
            let brute: Vec<usize> = (0..n)
                .filter(|&i| !(0..n).any(|j| dominates(&pts[j], &pts[i])))
                .collect();
            assert_eq!(pareto_set(&pts), brute, "points {pts:?}");
        }
    }

    #[test]
    fn hypervolume_3d_of_hand_computed_cases() {
        // One point: a box.
        assert!(
            (hypervolume_3d(&[[1.0, 2.0, 3.0]], [2.0, 4.0, 5.0]) - 1.0 * 2.0 * 2.0).abs() < 1e-12
        );
        // Two boxes [0,2]×[0,1]×[0,1] ∪ [0,1]×[0,2]×[0,2] (ref 2,2,2 with points (0,1,1), (1,0,0)…):
        // points a = (1, 0, 0) → box 1×2×2 = 4; b = (0, 1, 1) → box 2×1×1 = 2; overlap 1×1×1 = 1.
        let hv = hypervolume_3d(&[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], [2.0, 2.0, 2.0]);
        assert!((hv - 5.0).abs() < 1e-12, "{hv}");
        // A dominated point adds nothing.
        let hv2 = hypervolume_3d(
            &[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [1.5, 1.5, 1.5]],
            [2.0, 2.0, 2.0],
        );
        assert!((hv2 - 5.0).abs() < 1e-12);
    }

    #[test]
    fn hypervolume_of_a_staircase() {
        let hv = hypervolume_2d(&[[1.0, 3.0], [2.0, 1.0], [3.0, 3.5]], [4.0, 4.0]);
        // (4-1)*(4-3) + (4-2)*(3-1) = 3 + 4
        assert!((hv - 7.0).abs() < 1e-12);
        assert_eq!(hypervolume_2d(&[[5.0, 1.0]], [4.0, 4.0]), 0.0);
    }
}
