//! The trial stores, each backend the same way: records append, reload and update; the queue
//! claims each waiting trial once and retries stale ones; bad URLs, missing studies, newer
//! schemas and unreachable servers are clear errors; SQLite survives `kill -9` while writing.
//! PostgreSQL tests run against a throw-away server (`common::pg`).

mod common;

use mnv4_lab::search::store::{open, Job, OpenStudy, TrialStore};
use mnv4_lab::search::trials::{Stage, Trial};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn trial(index: usize, epochs: usize) -> Trial {
    Trial {
        index,
        arch: format!("arch{index}"),
        hash: format!("h{index}"),
        feasible: true,
        val_top1: Some(0.5),
        epochs,
        ..Trial::default()
    }
}

fn job(index: usize) -> Job {
    Job {
        index,
        stage: Stage::Coarse,
        label: String::new(),
        arch: format!("arch{index}"),
        epochs: 1,
        promote: None,
    }
}

fn temp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mnv4-store-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn err(r: anyhow::Result<Box<dyn TrialStore>>) -> String {
    format!("{:#}", r.err().expect("an error"))
}

/// Append, reload, update, missing study, claims and retries against the store at `url`.
fn exercise(url: &str) {
    let settings = json!({"version": "x"});
    let s = open(url, "a", OpenStudy::Create(&settings)).unwrap();
    s.record(&trial(0, 1)).unwrap();
    s.record(&trial(1, 1)).unwrap();
    s.record(&trial(0, 3)).unwrap();
    drop(s);
    let s = open(url, "a", OpenStudy::Existing).unwrap();
    let t = s.trials().unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!((t[0].epochs, t[1].index), (3, 1), "the later record wins");
    assert_eq!(t[1], trial(1, 1));

    let e = err(open(url, "nope", OpenStudy::Existing));
    assert!(
        e.contains("no study named 'nope'") && e.contains("it holds: a"),
        "{e}"
    );

    let b = open(url, "b", OpenStudy::Create(&settings)).unwrap();
    assert!(b.trials().unwrap().is_empty(), "studies are apart");
    let q = b.queue().expect("a database has a queue");
    assert_eq!(q.settings().unwrap(), settings);
    q.enqueue(&[job(0), job(1), job(2)]).unwrap();
    q.enqueue(&[job(0)]).unwrap();
    let mut claimed: Vec<usize> = (0..3)
        .map(|_| q.claim("w1").unwrap().unwrap().job.index)
        .collect();
    claimed.sort();
    assert_eq!(claimed, [0, 1, 2]);
    assert!(q.claim("w2").unwrap().is_none());
    b.record(&trial(1, 1)).unwrap();
    let c = q.counts().unwrap();
    assert_eq!((c.waiting, c.running, c.done), (0, 2, 1));
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(q.requeue_stale(0.0, 2).unwrap(), 2, "stale trials go back");
    let again = q.claim("w2").unwrap().unwrap();
    assert_eq!((again.job, again.attempt), (job(0), 2));
    std::thread::sleep(Duration::from_millis(20));
    q.requeue_stale(0.0, 2).unwrap();
    let c = q.counts().unwrap();
    assert_eq!(
        (c.waiting, c.failed),
        (1, 1),
        "after 2 attempts a trial fails"
    );
    let failed = q.failures().unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, 0);
    assert!(
        failed[0].1.contains("gave up after 2 attempts"),
        "{failed:?}"
    );
    // A promotion of a finished trial and a retry of a failed one go back to waiting with their
    // new jobs; a trial already waiting is left as it is.
    let promotion = Job {
        epochs: 4,
        promote: Some(Box::new(trial(1, 1))),
        ..job(1)
    };
    let retry = Job {
        epochs: 9,
        ..job(0)
    };
    q.requeue(&[promotion.clone(), retry.clone(), job(2)])
        .unwrap();
    let c = q.counts().unwrap();
    assert_eq!((c.waiting, c.done, c.failed), (3, 0, 0));
    assert!(q.failures().unwrap().is_empty());
    let jobs: Vec<Job> = (0..3)
        .map(|_| q.claim("w3").unwrap().unwrap().job)
        .collect();
    assert_eq!(jobs, [retry, promotion.clone(), job(2)]);
    assert!(promotion.finished_by(&trial(1, 4)) && !promotion.finished_by(&trial(1, 1)));
    assert!(!q.is_closed().unwrap());
    q.close().unwrap();
    assert!(q.is_closed().unwrap());
}

#[test]
fn sqlite_records_reload_update_and_queue() {
    let d = temp("sqlite");
    exercise(&format!("sqlite:{}", d.join("t.sqlite").display()));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn postgres_records_reload_update_and_queue() {
    let Some(pg) = common::require(common::pg::start("basic"), "a PostgreSQL server") else {
        return;
    };
    exercise(&pg.url);
}

#[test]
fn bad_urls_and_files_are_named() {
    let d = temp("bad");
    let new = OpenStudy::Create(&serde_json::Value::Null);
    for url in ["mysql://h/db", "sqlite:", "runs/x"] {
        let e = err(open(url, "a", new));
        assert!(e.contains(&format!("'{url}'")), "{e}");
    }
    let missing = d.join("none.sqlite");
    let e = err(open(
        &format!("sqlite:{}", missing.display()),
        "a",
        OpenStudy::Existing,
    ));
    assert!(e.contains("none.sqlite"), "{e}");
    let junk = d.join("junk.sqlite");
    std::fs::write(&junk, vec![7u8; 4096]).unwrap();
    let e = err(open(&format!("sqlite:{}", junk.display()), "a", new));
    assert!(e.contains("junk.sqlite"), "{e}");
    let e = err(open(
        &d.join("none.jsonl").display().to_string(),
        "a",
        OpenStudy::Existing,
    ));
    assert!(e.contains("none.jsonl"), "{e}");
    let e = err(open("postgres://nobody@127.0.0.1:1/db", "a", new));
    assert!(
        e.contains("cannot reach the PostgreSQL server at postgres://nobody@127.0.0.1:1/db"),
        "{e}"
    );
    let e = err(open("postgres://u:secret@/db?port=x", "a", new));
    assert!(
        e.contains("not a valid PostgreSQL URL") && !e.contains("secret"),
        "{e}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_newer_schema_is_refused() {
    let d = temp("schema");
    let path = d.join("t.sqlite");
    let url = format!("sqlite:{}", path.display());
    drop(open(&url, "a", OpenStudy::Create(&json!({}))).unwrap());
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute("UPDATE studies SET schema_version = 99", [])
        .unwrap();
    let e = err(open(&url, "a", OpenStudy::Existing));
    assert!(
        e.contains("schema version 99") && e.contains("t.sqlite"),
        "{e}"
    );
    std::fs::remove_dir_all(&d).unwrap();

    let Some(pg) = common::require(common::pg::start("schema"), "a PostgreSQL server") else {
        return;
    };
    drop(open(&pg.url, "a", OpenStudy::Create(&json!({}))).unwrap());
    let mut c = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
    c.execute("UPDATE studies SET schema_version = 99", &[])
        .unwrap();
    let e = err(open(&pg.url, "a", OpenStudy::Existing));
    assert!(e.contains("schema version 99"), "{e}");
}

/// The child of the kill test: records trials in a loop, printing each index once committed.
#[test]
fn sqlite_writer_child() {
    let Some(url) = std::env::var_os("MNV4_SQLITE_CHILD") else {
        return;
    };
    let url = url.to_string_lossy().to_string();
    let s = open(&url, "k", OpenStudy::Create(&json!({}))).unwrap();
    let mut i = s.trials().unwrap().len();
    loop {
        s.record(&trial(i, 1)).unwrap();
        println!("committed {i}");
        i += 1;
    }
}

#[test]
fn sqlite_survives_kill_9_while_writing() {
    let d = temp("kill");
    let url = format!("sqlite:{}", d.join("t.sqlite").display());
    let mut committed = 0;
    for round in 0..5 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "sqlite_writer_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("MNV4_SQLITE_CHILD", &url)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let target = committed + 20 + 7 * round;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("committed ") {
                committed = n.parse::<usize>().unwrap() + 1;
                if committed >= target {
                    break;
                }
            }
        }
        child.kill().unwrap(); // SIGKILL, mid-write
        child.wait().unwrap();
        for line in lines.map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("committed ") {
                committed = n.parse::<usize>().unwrap() + 1;
            }
        }
        let t = open(&url, "k", OpenStudy::Existing)
            .unwrap()
            .trials()
            .unwrap();
        assert!(
            t.len() >= committed,
            "round {round}: a committed trial was lost"
        );
        assert!(
            t.iter().enumerate().all(|(i, x)| *x == trial(i, 1)),
            "round {round}"
        );
        committed = t.len();
    }
    std::fs::remove_dir_all(&d).unwrap();
}
