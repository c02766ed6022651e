//! The search report, regenerated from a run folder (`search.json` + `trials.jsonl`) by
//! `mnv4-lab report RUN_DIR`: trial tables, the Pareto set (CSV + one arch TOML per member),
//! Pareto and hypervolume plots (PNG + SVG), and a README summary.

use super::latency::REFERENCE;
use super::noise::NoiseFloor;
use super::objective::trial_point;
use super::pareto::{hypervolume_2d, hypervolume_3d, ranks, Point};
use super::study::SearchState;
use super::trials::{Stage, Trial};
use crate::fsutil::atomic_write;
use crate::report::plot::{write_png_svg, Chart, Series};
use crate::report::table::{frame, write_csv_parquet, Col};
use crate::space::Arch;
use anyhow::{Context, Result};
use plotters::style::RGBColor;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Writes every report file for `run_dir` into `out` (default from the experiment), reading the
/// trials from `storage` (default: the store the run recorded). Returns `out`.
pub fn write_report(run_dir: &Path, out: Option<&Path>, storage: Option<&str>) -> Result<PathBuf> {
    let state = SearchState::read(run_dir)?;
    let exp = &state.study;
    let cfg = &exp.search;
    let score = cfg.score();
    let score_name = score.short_name();
    let out = out.map_or_else(|| exp.report_dir(), Path::to_path_buf);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    // The study's settings travel with the report, for `mnv4-lab retrain`.
    let study = serde_json::to_string_pretty(exp)?;
    atomic_write(&out.join("study.json"), study.as_bytes())?;
    let store = super::store::open_run(run_dir, &state, storage)?;
    let all = store.trials()?;
    let events = store.events()?;
    anyhow::ensure!(
        !all.is_empty(),
        "{} has no finished trials yet",
        run_dir.display()
    );

    // Rank the searched candidates (references are drawn, not ranked).
    let searched: Vec<&Trial> = all
        .iter()
        .filter(|t| t.stage.is_candidate() && t.duplicate_of.is_none())
        .collect();
    let points: Vec<Point> = searched
        .iter()
        .map(|t| trial_point(t, &cfg.objectives))
        .collect::<Result<_>>()?;
    let rank = ranks(&points);
    let rank_of = |t: &Trial| {
        searched
            .iter()
            .position(|s| s.index == t.index)
            .map(|i| rank[i] as i64)
            .unwrap_or(-1)
    };
    let front: Vec<&Trial> = searched
        .iter()
        .zip(&rank)
        .filter(|(t, r)| **r == 0 && t.feasible && t.val_top1.is_some())
        .map(|(t, _)| *t)
        .collect();

    // Tables.
    let profiles: Vec<String> = all[0].roofline_ms.keys().cloned().collect();
    let mut cols = vec![
        Col::int("index", all.iter().map(|t| t.index as i64).collect()),
        Col::text("stage", all.iter().map(|t| t.stage.to_string()).collect()),
        Col::text(
            "strategy",
            all.iter().map(|t| t.strategy.to_string()).collect(),
        ),
        Col::text("label", all.iter().map(|t| t.label.clone()).collect()),
        Col::text("arch", all.iter().map(|t| t.arch.clone()).collect()),
        Col::text("hash", all.iter().map(|t| t.hash.clone()).collect()),
        Col::boolean("feasible", all.iter().map(|t| t.feasible).collect()),
        Col::float("violation", all.iter().map(|t| t.violation).collect()),
        Col::int(
            "duplicate_of",
            all.iter()
                .map(|t| t.duplicate_of.map(|d| d as i64).unwrap_or(-1))
                .collect(),
        ),
        Col::float(
            score.to_string(),
            all.iter().map(|t| t.val_top1.unwrap_or(f64::NAN)).collect(),
        ),
        Col::int("params", all.iter().map(|t| t.params as i64).collect()),
        Col::int("macs", all.iter().map(|t| t.macs as i64).collect()),
        Col::float("latency_ms", all.iter().map(|t| t.latency_ms).collect()),
        Col::float(
            "latency_ratio",
            all.iter().map(|t| ratio_part(t, 0)).collect(),
        ),
        Col::float(
            "latency_ratio_lo",
            all.iter().map(|t| ratio_part(t, 1)).collect(),
        ),
        Col::float(
            "latency_ratio_hi",
            all.iter().map(|t| ratio_part(t, 2)).collect(),
        ),
    ];
    if runtime_timed(&all) {
        cols.push(Col::float(
            "runtime_latency_ms",
            all.iter().map(runtime_ms).collect(),
        ));
    }
    for p in &profiles {
        cols.push(Col::float(
            format!("roofline_{p}_ms"),
            all.iter()
                .map(|t| t.roofline_ms.get(p).copied().unwrap_or(f64::NAN))
                .collect(),
        ));
    }
    cols.extend([
        Col::int("rank", all.iter().map(rank_of).collect()),
        Col::int("epochs", all.iter().map(|t| t.epochs as i64).collect()),
        Col::text("seed", all.iter().map(|t| t.seed.to_string()).collect()),
        Col::float("wall_seconds", all.iter().map(|t| t.wall_seconds).collect()),
        Col::text(
            "failed",
            all.iter()
                .map(|t| t.failed.clone().unwrap_or_default())
                .collect(),
        ),
    ]);
    write_csv_parquet(&mut frame(cols)?, &out, "trials")?;

    let mut sorted_front = front.clone();
    let cost = &cfg.objectives[1];
    sorted_front.sort_by(|a, b| {
        let v = |t: &Trial| cost.value(t).unwrap_or(0.0);
        v(a).total_cmp(&v(b))
    });
    let pareto_dir = out.join("pareto");
    std::fs::create_dir_all(&pareto_dir)?;
    remove_stale_members(&pareto_dir, &sorted_front)?;
    for t in &sorted_front {
        let mut arch = Arch::from_block_string(&t.arch)?;
        arch.name = Some(format!("{}-t{:04}", exp.name, t.index));
        atomic_write(
            &pareto_dir.join(format!("t{:04}.toml", t.index)),
            arch.to_toml_string().as_bytes(),
        )?;
    }
    let timed = runtime_timed(&all);
    let mut front_cols = vec![
        Col::int(
            "index",
            sorted_front.iter().map(|t| t.index as i64).collect(),
        ),
        Col::text(
            "stage",
            sorted_front.iter().map(|t| t.stage.to_string()).collect(),
        ),
        Col::float(
            score.to_string(),
            sorted_front
                .iter()
                .map(|t| t.val_top1.unwrap_or(f64::NAN))
                .collect(),
        ),
        Col::int(
            "params",
            sorted_front.iter().map(|t| t.params as i64).collect(),
        ),
        Col::int("macs", sorted_front.iter().map(|t| t.macs as i64).collect()),
        Col::float(
            "latency_ms",
            sorted_front.iter().map(|t| t.latency_ms).collect(),
        ),
        Col::float(
            "latency_ratio",
            sorted_front.iter().map(|t| ratio_part(t, 0)).collect(),
        ),
        Col::text(
            "arch_file",
            sorted_front
                .iter()
                .map(|t| format!("pareto/t{:04}.toml", t.index))
                .collect(),
        ),
        Col::text(
            "arch",
            sorted_front.iter().map(|t| t.arch.clone()).collect(),
        ),
    ];
    if timed {
        let ms = sorted_front.iter().map(|t| runtime_ms(t)).collect();
        front_cols.insert(7, Col::float("runtime_latency_ms", ms));
    }
    write_csv_parquet(&mut frame(front_cols)?, &out, "pareto")?;

    // Pareto plot: accuracy against the second objective.
    let (x_label, scale) = cost.axis();
    let (y_label, _) = score.axis();
    let xy = |t: &Trial| -> Option<(f64, f64)> {
        Some((cost.value(t).ok()? * scale, 100.0 * t.val_top1?))
    };
    let pick = |stage: Stage| -> Vec<(f64, f64)> {
        all.iter()
            .filter(|t| t.stage == stage && t.feasible && t.duplicate_of.is_none())
            .filter_map(xy)
            .collect()
    };
    let refs: Vec<&Trial> = all.iter().filter(|t| t.stage == Stage::Reference).collect();
    let title = format!("{}: accuracy vs {cost}", exp.name);
    let chart = Chart {
        title: &title,
        x_label: &x_label,
        y_label: &y_label,
        series: vec![
            Series {
                label: "coarse stage (widths, depths)".into(),
                points: pick(Stage::Coarse),
                color: RGBColor(31, 119, 180),
                line: false,
                marker: 5,
            },
            Series {
                label: "fine stage (UIB choices, MQA)".into(),
                points: pick(Stage::Fine),
                color: RGBColor(255, 127, 14),
                line: false,
                marker: 5,
            },
            Series {
                label: "Pareto front".into(),
                points: sorted_front.iter().filter_map(|t| xy(t)).collect(),
                color: RGBColor(214, 39, 40),
                line: true,
                marker: 3,
            },
            Series {
                label: "MobileNetV4 presets (at the largest budget)".into(),
                points: refs.iter().filter_map(|t| xy(t)).collect(),
                color: RGBColor(20, 20, 20),
                line: false,
                marker: 6,
            },
        ],
        annotations: refs
            .iter()
            .filter_map(|t| xy(t).map(|(x, y)| (x, y, format!("  {}", t.label))))
            .collect(),
        log_x: false,
    };
    let drawn = chart.series.iter().any(|s| !s.points.is_empty());
    if drawn {
        write_png_svg(&chart, &out, "pareto")?;
    }

    // Hypervolume after each evaluation as it happened (a promotion is a new evaluation).
    let r = &state.hv_reference;
    let hv = hypervolume_curve(&events, cfg, r)?;
    write_csv_parquet(
        &mut frame(vec![
            Col::int("evaluation", hv.iter().map(|h| h.0 as i64).collect()),
            Col::int("trial", hv.iter().map(|h| h.1 as i64).collect()),
            Col::float("hypervolume", hv.iter().map(|h| h.2).collect()),
        ])?,
        &out,
        "hypervolume",
    )?;
    let hv_title = format!(
        "{}: hypervolume, {} search (reference point {:?})",
        exp.name, all[0].strategy, r
    );
    write_png_svg(
        &Chart {
            title: &hv_title,
            x_label: "evaluation (a promotion counts as a new one)",
            y_label: &format!("hypervolume of (1 − {score_name}, costs)"),
            series: vec![Series {
                label: all[0].strategy.to_string(),
                points: hv.iter().map(|h| (h.0 as f64, h.2)).collect(),
                color: RGBColor(44, 160, 44),
                line: true,
                marker: 3,
            }],
            annotations: vec![],
            log_x: false,
        },
        &out,
        "hypervolume",
    )?;

    // README summary.
    let spent: f64 = all.iter().map(|t| t.wall_seconds).sum();
    let mut md = String::new();
    writeln!(md, "# Search report: {}\n", exp.name)?;
    writeln!(
        md,
        "Regenerate with `mnv4-lab report {}`.\n",
        run_dir.display()
    )?;
    writeln!(md, "## Settings\n")?;
    writeln!(
        md,
        "- space: `{}` ({}), strategy **{}**, population {}, objectives {}",
        cfg.space.display(),
        state.space.name,
        all[0].strategy,
        cfg.population,
        cfg.objectives
            .iter()
            .map(|o| o.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    let own: usize = [&cfg.coarse, &cfg.fine]
        .iter()
        .map(|b| b.trials.saturating_sub(cfg.population))
        .sum();
    writeln!(
        md,
        "- proposals: the first {} of each stage come from a stream every strategy shares (the same starting candidates); the other {own} are this strategy's own",
        cfg.population
    )?;
    writeln!(
        md,
        "- budgets: max params {:?}, max MACs {:?}, max latency {:?} ms",
        cfg.max_params, cfg.max_macs, cfg.max_latency_ms
    )?;
    let halving = |b: &super::config::StageBudget| {
        if b.halving_keep > 0.0 && b.halving_epochs > b.epochs {
            format!(
                ", best {:.0}% continue to {} epochs",
                100.0 * b.halving_keep,
                b.halving_epochs
            )
        } else {
            String::new()
        }
    };
    writeln!(
        md,
        "- coarse stage: {} trials × {} epochs{}; fine stage: {} trials × {} epochs{}",
        cfg.coarse.trials,
        cfg.coarse.epochs,
        halving(&cfg.coarse),
        cfg.fine.trials,
        cfg.fine.epochs,
        halving(&cfg.fine)
    )?;
    match &cfg.detect {
        Some(d) => writeln!(md, "- detection study: each candidate is the backbone of a YOLO11{} detector (its neck and head), trained from scratch with the study's recipe on {} at {}×{}; seed {}", d.scale, d.data.dataset.display(), state.input_size, state.input_size, exp.seed)?,
        None => writeln!(md, "- data: {} at {}×{} ({} channels), validation {} images (split seed {}), training subset {}; seed {}", exp.data.dataset, state.input_size, state.input_size, exp.data.augment.channels, exp.data.val_size, exp.data.split_seed, if exp.data.train_limit == 0 { "all".to_string() } else { exp.data.train_limit.to_string() }, exp.seed)?,
    }
    match (&state.teacher, state.teacher_test_top1) {
        (Some(t), Some(acc)) => writeln!(
            md,
            "- distillation: {} (teacher test top-1 {:.2}%); {}",
            t,
            100.0 * acc,
            exp.distill.describe()
        )?,
        _ => match cfg.detect.as_ref().map(|d| (&d.teacher, d.distill)) {
            Some((Some(t), w)) => writeln!(md, "- distillation from the detector {} into every candidate: class scores (Bernoulli KL at T = {}, weight {}) and P3–P5 maps (MSE through 1×1 adapters, weight {}), added to YOLO11's loss", t.display(), w.temperature, w.cls_weight, w.feature_weight)?,
            Some((None, _)) => writeln!(md, "- no distillation (YOLO11's detection loss only)")?,
            None => writeln!(md, "- no distillation (cross-entropy only)")?,
        },
    }
    if let Some(tv) = state.teacher_val_top1 {
        let above = all
            .iter()
            .filter(|t| t.stage.is_candidate() && t.val_top1.is_some_and(|v| v >= tv))
            .count();
        writeln!(
            md,
            "- teacher validation top-1 {:.2}% (the candidates' split); {above} candidate(s) at or above it{}",
            100.0 * tv,
            if above > 0 { " (marked ⚠ below): a student that beats its teacher is not being taught" } else { "" }
        )?;
    }
    writeln!(
        md,
        "- candidates are ranked on their {score_name}; the test set is not used by the search"
    )?;
    writeln!(
        md,
        "- time: {:.1} min of trial work over {} trials ({} infeasible, {} duplicates, {} failed){}",
        spent / 60.0,
        all.len(),
        all.iter().filter(|t| !t.feasible).count(),
        all.iter().filter(|t| t.duplicate_of.is_some()).count(),
        all.iter().filter(|t| t.failed.is_some()).count(),
        match state.teacher_seconds {
            Some(s) => format!("; {:.1} min finding or training the teacher", s / 60.0),
            None => String::new(),
        }
    )?;
    writeln!(
        md,
        "- machine: {} (latencies and times measured there)\n",
        state.machine.as_deref().unwrap_or("not recorded")
    )?;
    writeln!(md, "## Pareto front\n")?;
    let (runtime_head, runtime_rule) = match timed {
        true => (" ONNX runtime (ms) |", "---:|"),
        false => ("", ""),
    };
    writeln!(
        md,
        "| trial | stage | epochs | {score_name} | params | MACs | latency (ms; × {} ×{} [95 % CI]) |{runtime_head} arch file |",
        REFERENCE.0,
        REFERENCE.1
    )?;
    writeln!(md, "|---:|---|---:|---:|---:|---:|---:|{runtime_rule}---|")?;
    let noise = NoiseFloor::from_trials(&all);
    let mut previous: Option<f64> = None;
    for t in &sorted_front {
        let val = t.val_top1.unwrap_or(0.0);
        let unresolved = match (&noise, previous) {
            (Some(n), Some(p)) => (val - p).abs() < n.resolved_gap(),
            _ => false,
        };
        previous = Some(val);
        let runtime_cell = match timed {
            true => format!(" {:.3} |", runtime_ms(t)),
            false => String::new(),
        };
        writeln!(
            md,
            "| {} | {} | {} | {:.2}%{}{} | {} | {:.2} M | {} |{runtime_cell} `pareto/t{:04}.toml` |",
            t.index,
            t.stage,
            t.epochs,
            100.0 * val,
            if unresolved { " ≈" } else { "" },
            match (state.teacher_val_top1, t.val_top1) {
                (Some(tv), Some(v)) if v >= tv => " ⚠",
                _ => "",
            },
            t.params,
            t.macs as f64 / 1e6,
            latency_cell(t),
            t.index
        )?;
    }
    if let Some(n) = &noise {
        md.push_str(&n.markdown(&score_name));
    }
    if let Some(noise) = latency_noise(&all) {
        writeln!(
            md,
            "\nLatency noise: a candidate's ratio to {} ×{} (timed in interleaved pairs) is known to ±{:.1} % (median half-width of the 95 % intervals); smaller latency differences are not resolved.",
            REFERENCE.0,
            REFERENCE.1,
            100.0 * noise
        )?;
    }
    if !refs.is_empty() {
        write_references(&mut md, &events, &cfg.budgets(), &refs, &score_name)?;
    }
    let failed: Vec<&Trial> = all.iter().filter(|t| t.failed.is_some()).collect();
    if !failed.is_empty() {
        writeln!(md, "\n## Failed trials (recorded, not retried)\n")?;
        writeln!(md, "| trial | stage | why | arch |")?;
        writeln!(md, "|---:|---|---|---|")?;
        for t in failed {
            let why = t.failed.as_deref().unwrap_or_default();
            writeln!(md, "| {} | {} | {why} | `{}` |", t.index, t.stage, t.arch)?;
        }
    }
    if drawn {
        writeln!(md, "\n![Pareto front](pareto.png)\n")?;
    } else {
        writeln!(
            md,
            "\nNo candidate was both within budget and trained, so there is no Pareto plot.\n"
        )?;
    }
    writeln!(md, "![Hypervolume](hypervolume.png)\n")?;
    writeln!(md, "Final hypervolume: {:.6} (reference point {:?}, fixed before the first trial). Files: `trials.csv` / `trials.parquet` (every trial), `pareto.csv` and `pareto/*.toml` (front members, ready for `mnv4-lab train` / `distill`), `hypervolume.csv`.", hv.last().map(|h| h.2).unwrap_or(0.0), r)?;
    atomic_write(&out.join("README.md"), md.as_bytes())?;
    Ok(out)
}

/// A trial's latency ratio (part 0), its interval's low (1) or high (2) end; NaN when absent.
fn ratio_part(t: &Trial, part: usize) -> f64 {
    match (part, t.latency_ratio, t.latency_ratio_ci) {
        (0, Some(r), _) => r,
        (1, _, Some(ci)) => ci[0],
        (2, _, Some(ci)) => ci[1],
        _ => f64::NAN,
    }
}

/// Milliseconds, and the ratio to the reference with its interval when measured.
fn latency_cell(t: &Trial) -> String {
    match (t.latency_ratio, t.latency_ratio_ci) {
        (Some(r), Some([lo, hi])) => {
            format!("{:.3} ({r:.2}× [{lo:.2}, {hi:.2}])", t.latency_ms)
        }
        _ => format!("{:.3}", t.latency_ms),
    }
}

/// Median over measured trials of the 95 % interval's half-width relative to the ratio.
fn latency_noise(trials: &[Trial]) -> Option<f64> {
    let mut widths: Vec<f64> = trials
        .iter()
        .filter_map(|t| Some((t.latency_ratio?, t.latency_ratio_ci?)))
        .map(|(r, [lo, hi])| (hi - lo) / 2.0 / r)
        .collect();
    if widths.is_empty() {
        return None;
    }
    widths.sort_by(|a, b| a.total_cmp(b));
    Some(widths[widths.len() / 2])
}

/// Whether any trial has an ONNX runtime latency (the study ranked on it).
fn runtime_timed(trials: &[Trial]) -> bool {
    trials.iter().any(|t| t.runtime_latency_ms.is_some())
}

/// A trial's ONNX runtime latency, NaN when it was not measured.
fn runtime_ms(t: &Trial) -> f64 {
    t.runtime_latency_ms.unwrap_or(f64::NAN)
}

/// The references table: each preset's validation accuracy at every budget candidates were
/// evaluated at (a front member compares with the column of its own epochs).
fn write_references(
    md: &mut String,
    events: &[Trial],
    budgets: &[usize],
    refs: &[&Trial],
    score: &str,
) -> Result<()> {
    let at = |t: &Trial, epochs: usize| {
        events
            .iter()
            .find(|e| e.index == t.index && e.epochs == epochs)
            .and_then(|e| e.val_top1)
            .map_or("–".to_string(), |v| format!("{:.2}%", 100.0 * v))
    };
    let heads: String = budgets
        .iter()
        .map(|b| format!(" {score} at {b} epochs |"))
        .collect();
    writeln!(md, "\n## Reference presets, at every candidate budget\n")?;
    writeln!(md, "| preset |{heads} params | MACs | latency (ms) |")?;
    writeln!(md, "|---|{}---:|---:|---:|", "---:|".repeat(budgets.len()))?;
    for t in refs {
        let cells: String = budgets
            .iter()
            .map(|&b| format!(" {} |", at(t, b)))
            .collect();
        writeln!(
            md,
            "| {} |{cells} {} | {:.2} M | {:.3} |",
            t.label,
            t.params,
            t.macs as f64 / 1e6,
            t.latency_ms
        )?;
    }
    Ok(())
}

/// (evaluation number, trial index, hypervolume) after each record of the log, references
/// left out: the front as it stood after every evaluation.
fn hypervolume_curve(
    events: &[Trial],
    cfg: &super::config::SearchConfig,
    r: &[f64],
) -> Result<Vec<(usize, usize, f64)>> {
    let mut current: std::collections::BTreeMap<usize, &Trial> = Default::default();
    let mut curve = Vec::new();
    for (n, t) in events.iter().filter(|t| t.stage.is_candidate()).enumerate() {
        let index = t.index;
        current.insert(index, t);
        let pts = current
            .values()
            .filter(|t| t.feasible && t.val_top1.is_some())
            .map(|t| Ok(trial_point(t, &cfg.objectives)?.objectives))
            .collect::<Result<Vec<_>>>()?;
        let value = match r.len() {
            3 => hypervolume_3d(
                &pts.iter().map(|p| [p[0], p[1], p[2]]).collect::<Vec<_>>(),
                [r[0], r[1], r[2]],
            ),
            _ => hypervolume_2d(
                &pts.iter().map(|p| [p[0], p[1]]).collect::<Vec<_>>(),
                [r[0], r[1]],
            ),
        };
        curve.push((n + 1, index, value));
    }
    Ok(curve)
}

/// Deletes the `tNNNN.toml` files in `dir` that belong to no member of `front` (left by an
/// earlier report of the same folder), so the folder holds exactly the current front.
fn remove_stale_members(dir: &Path, front: &[&Trial]) -> Result<()> {
    let keep: std::collections::HashSet<String> = front
        .iter()
        .map(|t| format!("t{:04}.toml", t.index))
        .collect();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let member_file = name.len() > 6
            && name.starts_with('t')
            && name.ends_with(".toml")
            && name[1..name.len() - 5].chars().all(|c| c.is_ascii_digit());
        if member_file && !keep.contains(&name) {
            let path = dir.join(&name);
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_front_members_are_removed_and_other_files_kept() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("mnv4-pareto-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        for name in ["t0001.toml", "t0002.toml", "notes.toml", "t12.txt"] {
            std::fs::write(dir.join(name), "x")?;
        }
        let member = Trial {
            index: 1,
            ..Trial::default()
        };
        remove_stale_members(&dir, &[&member])?;
        let mut left: Vec<String> = std::fs::read_dir(&dir)?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_>>()?;
        left.sort();
        assert_eq!(left, ["notes.toml", "t0001.toml", "t12.txt"]);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
