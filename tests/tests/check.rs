//! `onramp check` and the quick check on open, against the `onramp` binary: a healthy store
//! passes; tampered entries, damaged sled files and a full disk are each reported for what
//! they are, and `run`/`serve` refuse a store the quick check finds damaged.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use onramp::store::{Batch, Store};
use onramp_schemas::{RejectReason, RejectedEvent};
use onramp_tests::cli::Onramp;
use onramp_tests::running::Running;

/// The debug build, like every other test: a release build would compile the whole
/// dependency tree a second time in CI.
const ONRAMP: Onramp = Onramp::Debug;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The flags of the generated run every store here is written with.
const GEN: [&str; 7] = ["--generate", "--users", "250", "--seed", "5", "--partitions", "3"];

/// Writes a store from generated traffic (bots, test users, malformed lines: rejects too).
fn generated_store(path: &Path) {
    let mut args = vec!["run", "--store", path.to_str().unwrap()];
    args.extend(GEN);
    let out = ONRAMP.output(&args);
    assert!(out.status.success(), "the generated run failed: {}", text(&out.stderr));
}

/// `onramp check --json` on `store`: exit success and the report.
fn check(store: &Path) -> (bool, serde_json::Value, String) {
    let out = ONRAMP.output(&["check", "--store", store.to_str().unwrap(), "--json"]);
    let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.success(), report, text(&out.stderr))
}

/// Asserts `onramp check` fails on `store` with a problem of `kind` whose key contains `key`.
fn assert_check_finds(store: &Path, kind: &str, key: &str) -> serde_json::Value {
    let (ok, report, stderr) = check(store);
    assert!(!ok, "check passed a damaged store: {report:#}");
    assert_eq!(report["healthy"], false, "{report:#}");
    assert!(
        stderr.contains("is damaged") && stderr.contains("onramp check --help"),
        "the error says the store is damaged and where the rebuild is explained: {stderr}"
    );
    let found = report["problems"].as_array().unwrap().iter().any(|p| {
        p["kind"] == kind && p["key"].as_str().unwrap().contains(key) && !p["what"].as_str().unwrap().is_empty()
    });
    assert!(found, "expected a {kind} problem at key `{key}` in {report:#}");
    // The text form names it too, and says how to rebuild.
    let out = ONRAMP.output(&["check", "--store", store.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("[{kind}]")) && stdout.contains("DAMAGED"),
        "{stdout}"
    );
    assert!(
        stdout.contains("onramp run --source fluvio") && stdout.contains("--partitions 3"),
        "{stdout}"
    );
    report
}

/// Asserts `onramp run` (the same generated input) refuses `store` as damaged, naming `what`.
fn assert_run_refuses(store: &Path, what: &str) {
    let mut args = vec!["run", "--store", store.to_str().unwrap()];
    args.extend(GEN);
    let out = ONRAMP.output(&args);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "run accepted a damaged store");
    assert!(
        stderr.contains("is damaged") && stderr.contains("onramp check --store") && stderr.contains(what),
        "run's error names the damage ({what}) and `onramp check`: {stderr}"
    );
}

/// Asserts `onramp serve` refuses `store` (exits with an error instead of serving).
fn assert_serve_refuses(store: &Path) {
    let mut cmd = ONRAMP.command();
    cmd.args(["serve", "--store", store.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    let mut serve = Running::spawn(cmd, store.with_extension("serve.log"));
    let Some(status) = serve.wait_timeout(Duration::from_secs(60)) else {
        panic!("onramp serve (pid {}) started on a damaged store", serve.id());
    };
    let stderr = serve.log_text();
    assert!(!status.success() && stderr.contains("is damaged"), "{stderr}");
}

/// The generated store, written once per test process (in the target's tmp directory),
/// and its export. Nothing opens it after this: tests copy it (sled allows one process
/// per store, and a copy must not race a process writing sled's snapshot).
struct Healthy {
    _dir: tempfile::TempDir,
    path: PathBuf,
    export: Vec<u8>,
}

fn healthy() -> &'static Healthy {
    static STORE: OnceLock<Healthy> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let path = dir.path().join("store");
        generated_store(&path);
        let out = ONRAMP.output(&["export", "--store", path.to_str().unwrap()]);
        assert!(out.status.success(), "export: {}", text(&out.stderr));
        Healthy {
            _dir: dir,
            path,
            export: out.stdout,
        }
    })
}

/// A copy of the generated store at `to`.
fn healthy_copy(to: &Path) {
    copy_dir(&healthy().path, to);
}

/// Copies a store directory (sled's files) while nothing has it open.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A copy of `store` (flushed, and no longer used by this process) that another process
/// can open. sled frees a dropped database's file lock only when its deferred
/// (epoch-based) cleanup runs, which in a test process may be never; a copy is a new file.
fn settled(store: &Path) -> PathBuf {
    static COPIES: AtomicUsize = AtomicUsize::new(0);
    let n = COPIES.fetch_add(1, Ordering::Relaxed);
    let to = store.with_file_name(format!("settled-{n}"));
    copy_dir(store, &to);
    to
}

/// A copy of the generated store, with sled opened on it to tamper.
struct Tampered {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Tampered {
    fn new(tamper: impl FnOnce(&sled::Db)) -> Tampered {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        healthy_copy(&path);
        {
            let db = sled::open(&path).unwrap();
            tamper(&db);
            db.flush().unwrap();
        }
        Tampered {
            path: settled(&path),
            _dir: dir,
        }
    }
}

/// The keys of `tree`, in order.
fn keys(db: &sled::Db, tree: &str) -> Vec<sled::IVec> {
    db.open_tree(tree).unwrap().iter().keys().map(Result::unwrap).collect()
}

/// Proves a store written by generated runs — rejects of several reasons, a resumed run,
/// an erasure — passes the full check (exit 0) with every tree walked and nothing reported.
#[test]
fn a_healthy_store_passes() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    healthy_copy(&store);
    // A second run over the same input resumes (commits nothing new) and keeps it healthy.
    generated_store(&store);
    let (ok, report, stderr) = check(&store);
    assert!(ok, "check failed on a healthy store: {stderr}\n{report:#}");
    assert_eq!(report["healthy"], true);
    assert_eq!(report["problem_count"], 0);
    assert_eq!(report["depth"], "full");
    assert_eq!(report["partitions"], 3);
    assert_eq!(report["checkpoints"].as_object().unwrap().len(), 3);
    for tree in ["profiles", "fold_state", "rejects", "counters", "meta", "checkpoints"] {
        assert!(
            report["entries"][tree].as_u64().unwrap() > 0,
            "{tree} was walked: {report:#}"
        );
    }
    assert!(report["entries"]["rejects_by_identity"].is_u64());
    assert!(report["counters"]["erased.profiles"].is_null());

    // Erase a user: still healthy, with the erased counters in the equations.
    let profiles: Vec<serde_json::Value> = healthy()
        .export
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let user = profiles[profiles.len() / 3]["user_id"].as_str().unwrap().to_string();
    let erased = Store::open_existing(&store).unwrap().erase(&user).unwrap();
    assert!(
        erased.profiles > 0 && !erased.fold_state_partitions.is_empty(),
        "{erased:?}"
    );
    let store = settled(&store);
    let (ok, report, stderr) = check(&store);
    assert!(ok, "check failed after erasing {user}: {stderr}\n{report:#}");
    assert_eq!(
        report["counters"]["erased.profiles"], erased.profiles,
        "every id of the person"
    );
    assert!(report["counters"]["erased.events"].as_u64().unwrap() > 0);
    let out = ONRAMP.output(&["check", "--store", store.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("healthy: no problems found"));
}

/// Proves the erasure index is checked both ways: a reject committed with an identity
/// (through `Store::commit`) is healthy; its index entry removed is a missing_index
/// problem and an entry pointing at no reject is a dangling_index problem.
#[test]
fn the_erasure_index_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    healthy_copy(&store);
    let offset = {
        let db = Store::open_existing(&store).unwrap();
        let offset = db.checkpoint(0).unwrap().unwrap().offset + 1;
        let rejected = RejectedEvent {
            reason: RejectReason::Bot,
            detail: "user agent matches `bot`".into(),
            payload: "{}".into(),
            payload_bytes: 2,
            payload_sha256: String::new(),
            identity: Some("u_indexed".into()),
            offset: Some(offset),
        };
        db.commit(&Batch {
            partition: 0,
            last_offset: offset,
            events_in: 1,
            updates: Vec::new(),
            rejects: vec![(offset, rejected)],
            input: None,
        })
        .unwrap();
        db.flush().unwrap();
        offset
    };
    let store = settled(&store);
    let (ok, report, stderr) = check(&store);
    assert!(ok, "{stderr}\n{report:#}");
    assert!(report["entries"]["rejects_by_identity"].as_u64().unwrap() >= 1);

    {
        let db = sled::open(&store).unwrap();
        let index = db.open_tree("rejects_by_identity").unwrap();
        let mut key = 9u32.to_be_bytes().to_vec();
        key.extend_from_slice(b"u_indexed");
        key.extend_from_slice(&0u32.to_be_bytes());
        key.extend_from_slice(&offset.to_be_bytes());
        assert!(index.remove(&key).unwrap().is_some(), "commit indexed the reject");
        key.truncate(4 + 9);
        key.extend_from_slice(&1u32.to_be_bytes());
        key.extend_from_slice(&999_999i64.to_be_bytes());
        index.insert(key, &[][..]).unwrap();
        db.flush().unwrap();
    }
    let store = settled(&store);
    assert_check_finds(&store, "missing_index", &format!("p0@{offset}"));
    assert_check_finds(&store, "dangling_index", "u_indexed→p1@999999");
}

/// Proves a counter changed outside a commit fails `onramp check` (counter_mismatch on the
/// equation it breaks) and `run` and `serve` refuse the store through the quick check.
#[test]
fn a_tampered_counter_is_refused() {
    let store = Tampered::new(|db| {
        let counters = db.open_tree("counters").unwrap();
        let applied = u64::from_be_bytes(counters.get("applied").unwrap().unwrap().as_ref().try_into().unwrap());
        counters.insert("applied", &(applied + 1).to_be_bytes()).unwrap();
    });
    let report = assert_check_finds(&store.path, "counter_mismatch", "accepted");
    let kinds = report["problems_by_kind"].as_object().unwrap();
    // The profiles' events no longer add up to `applied` either.
    assert!(
        report["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["tree"] == "profiles"),
        "{kinds:?}"
    );
    assert_run_refuses(&store.path, "accepted");
    assert_serve_refuses(&store.path);
    let out = ONRAMP.output(&["export", "--store", store.path.to_str().unwrap()]);
    assert!(!out.status.success() && out.stdout.is_empty(), "export refuses it too");
}

/// Proves profile values replaced by junk fail `onramp check` with the key of each; the
/// first profile (which the quick check reads) makes `run` and `serve` refuse the store.
#[test]
fn a_junk_profile_is_named() {
    let mut middle = String::new();
    let store = Tampered::new(|db| {
        let profiles = db.open_tree("profiles").unwrap();
        let keys = keys(db, "profiles");
        middle = String::from_utf8(keys[keys.len() / 2].to_vec()).unwrap();
        profiles
            .insert(&keys[keys.len() / 2], &b"{\"user_id\": 17, junk"[..])
            .unwrap();
    });
    let report = assert_check_finds(&store.path, "bad_value", &middle);
    assert_eq!(report["problem_count"], 1, "only the junk value: {report:#}");

    let mut first = String::new();
    let store = Tampered::new(|db| {
        let keys = keys(db, "profiles");
        first = String::from_utf8(keys[0].to_vec()).unwrap();
        db.open_tree("profiles")
            .unwrap()
            .insert(&keys[0], &[0u8; 40][..])
            .unwrap();
    });
    assert_check_finds(&store.path, "bad_value", &first);
    assert_run_refuses(&store.path, &first);
    assert_serve_refuses(&store.path);
}

/// Proves fold state of a user without a profile fails `onramp check` (orphan_fold_state
/// at that key); as the last fold_state entry it also makes `run` refuse the store.
#[test]
fn fold_state_without_a_profile_is_named() {
    let store = Tampered::new(|db| {
        let mut key = 2u32.to_be_bytes().to_vec();
        key.extend_from_slice(b"zz_ghost");
        let value = br#"{"last_active_ms":1793000000000,"recent_ids":["e1"]}"#;
        db.open_tree("fold_state").unwrap().insert(key, &value[..]).unwrap();
    });
    let report = assert_check_finds(&store.path, "orphan_fold_state", "p2/zz_ghost");
    assert_eq!(report["problem_count"], 1, "{report:#}");
    assert_run_refuses(&store.path, "zz_ghost");
    assert_serve_refuses(&store.path);
}

/// Proves a checkpoint of a partition the store does not have (≥ N) fails `onramp check`
/// (checkpoint_out_of_range) and `run` and `serve` refuse the store.
#[test]
fn a_checkpoint_beyond_the_partitions_is_refused() {
    let store = Tampered::new(|db| {
        db.open_tree("checkpoints")
            .unwrap()
            .insert(3u32.to_be_bytes(), &br#"{"offset":41}"#[..])
            .unwrap();
    });
    let report = assert_check_finds(&store.path, "checkpoint_out_of_range", "p3");
    assert!(
        report["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["kind"] == "counter_mismatch" && p["what"].as_str().unwrap().contains("checkpoint")),
        "the offsets it claims were never counted: {report:#}"
    );
    assert_run_refuses(&store.path, "partition 3");
    assert_serve_refuses(&store.path);
}

/// One way of damaging sled's files.
struct Corruption {
    name: &'static str,
    apply: fn(&Path),
}

fn db_file(store: &Path) -> PathBuf {
    store.join("db")
}

fn rewrite(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    f(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

const CORRUPTIONS: &[Corruption] = &[
    Corruption {
        name: "4 KiB zeroed in the middle of db",
        apply: |s| {
            rewrite(&db_file(s), |b| {
                let at = b.len() / 2;
                b[at..at + 4096].fill(0);
            })
        },
    },
    Corruption {
        name: "64 bytes flipped at 3/4 of db",
        apply: |s| {
            rewrite(&db_file(s), |b| {
                let at = b.len() * 3 / 4;
                b[at..at + 64].iter_mut().for_each(|x| *x ^= 0xff);
            })
        },
    },
    Corruption {
        name: "one byte in 997 flipped throughout db",
        apply: |s| rewrite(&db_file(s), |b| b.iter_mut().step_by(997).for_each(|x| *x ^= 0x55)),
    },
    Corruption {
        name: "the last quarter of db zeroed",
        apply: |s| {
            rewrite(&db_file(s), |b| {
                let at = b.len() * 3 / 4;
                b[at..].fill(0);
            })
        },
    },
    Corruption {
        name: "db truncated to half",
        apply: |s| {
            rewrite(&db_file(s), |b| {
                let half = b.len() / 2;
                b.truncate(half);
            })
        },
    },
    Corruption {
        name: "the first 64 KiB of db zeroed",
        apply: |s| {
            rewrite(&db_file(s), |b| {
                let end = b.len().min(65536);
                b[..end].fill(0);
            })
        },
    },
    // sled recovers these silently, to a store that is consistent but shorter: it keeps the
    // log up to the damage and drops the rest. Only the witness tells.
    Corruption {
        name: "one byte flipped at 2/3 of db",
        apply: |s| {
            rewrite(&db_file(s), |b| {
                let at = b.len() * 2 / 3;
                b[at] ^= 0xff;
            })
        },
    },
    Corruption {
        name: "one byte flipped at 9/10 of db",
        apply: |s| {
            rewrite(&db_file(s), |b| {
                let at = b.len() * 9 / 10;
                b[at] ^= 0xff;
            })
        },
    },
    Corruption {
        name: "db truncated to 9/10",
        apply: |s| {
            rewrite(&db_file(s), |b| {
                let keep = b.len() * 9 / 10;
                b.truncate(keep);
            })
        },
    },
    Corruption {
        name: "snapshot files flipped",
        apply: |s| {
            for entry in std::fs::read_dir(s).unwrap() {
                let path = entry.unwrap().path();
                if path.file_name().unwrap().to_string_lossy().starts_with("snap.") {
                    rewrite(&path, |b| b.iter_mut().for_each(|x| *x ^= 0x5a));
                }
            }
        },
    },
];

/// Proves bytes flipped, zeroed or cut from sled's files never give a silent exit 0 with
/// part of the data: `onramp check` either reports the store damaged (exit 1, no panic
/// trace) or passes with every profile the undamaged store had, byte for byte.
#[test]
fn damaged_sled_files_are_never_silently_partial() {
    let dir = tempfile::tempdir().unwrap();
    let mut outcomes = Vec::new();
    for c in CORRUPTIONS {
        let store = dir.path().join(c.name.replace(' ', "-"));
        healthy_copy(&store);
        (c.apply)(&store);
        let out = ONRAMP.output(&["check", "--store", store.to_str().unwrap()]);
        let stderr = text(&out.stderr);
        assert!(!stderr.contains("panicked at"), "{}: a panic trace: {stderr}", c.name);
        if out.status.success() {
            let export = ONRAMP.output(&["export", "--store", store.to_str().unwrap()]);
            assert!(
                export.status.success() && export.stdout == healthy().export,
                "{}: check passed, but the store does not hold every profile: {}",
                c.name,
                text(&export.stderr)
            );
            outcomes.push(format!("{}: check passes, every profile intact", c.name));
        } else {
            assert_eq!(out.status.code(), Some(1), "{}", c.name);
            assert!(stderr.contains("damaged"), "{}: {stderr}", c.name);
            outcomes.push(format!("{}: {}", c.name, stderr.trim()));
            // run refuses it or, when the quick check misses the damage, a read fails loudly.
        }
    }
    eprintln!("what sled and onramp check do:\n{}", outcomes.join("\n"));
}

/// Proves a store sled silently shortened (its log cut where it was damaged) is found by
/// its witness: `check` names the lost commits, `run` and `serve` refuse it, and neither
/// `export` nor `check` writes into it. The same store without its witness passes, which
/// is what the witness is for.
#[test]
fn a_store_shorter_than_its_witness_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // As a run leaves it (no sled snapshot yet, as after a SIGKILL): sled reads the whole log.
    // Without audiences: their drains write after each batch, so a cut of the log's tail can
    // drop only drains (redone by the next run), which the witness rightly does not count.
    let rules = dir.path().join("no-audiences.yaml");
    std::fs::write(&rules, "audiences: []\n").unwrap();
    let mut args = vec![
        "run",
        "--store",
        store.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
    ];
    args.extend(GEN);
    let out = ONRAMP.output(&args);
    assert!(out.status.success(), "the generated run failed: {}", text(&out.stderr));
    assert!(
        store.join(onramp::store::WITNESS_FILE).exists(),
        "a run leaves a witness"
    );
    // Where sled recovers a cut log silently depends on the store's layout: take the first
    // cut (from the end) that a store without its witness passes as healthy while it lost
    // committed records.
    let mut shortened = None;
    for (num, den) in [(9, 10), (17, 20), (4, 5), (3, 4), (2, 3), (1, 2)] {
        let cut = dir.path().join(format!("cut-{num}-{den}"));
        copy_dir(&store, &cut);
        rewrite(&db_file(&cut), |b| {
            let keep = b.len() * num / den;
            b.truncate(keep);
        });
        let probe = dir.path().join(format!("probe-{num}-{den}"));
        copy_dir(&cut, &probe);
        std::fs::remove_file(probe.join(onramp::store::WITNESS_FILE)).unwrap();
        if check(&probe).0 && !check(&cut).0 {
            eprintln!("sled recovers the log cut to {num}/{den} silently");
            shortened = Some(cut);
            break;
        }
    }
    let store = shortened.expect("a cut of the log that sled recovers silently (else this test proves nothing)");
    let report = assert_check_finds(&store, "lost_commits", "events_in");
    assert!(
        report["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["kind"] == "lost_commits" && p["what"].as_str().unwrap().contains("checkpoint")),
        "a partition's checkpoint is behind too: {report:#}"
    );
    let export = ONRAMP.output(&["export", "--store", store.to_str().unwrap()]);
    assert!(
        !export.status.success() && text(&export.stderr).contains("lost committed records"),
        "export refuses the shortened store: {}",
        text(&export.stderr)
    );
    assert_run_refuses(&store, "lost committed records");
    assert_serve_refuses(&store);

    let unwitnessed = dir.path().join("unwitnessed");
    copy_dir(&store, &unwitnessed);
    std::fs::remove_file(unwitnessed.join(onramp::store::WITNESS_FILE)).unwrap();
    let (ok, _, _) = check(&unwitnessed);
    assert!(
        ok,
        "without the witness sled's recovery looks healthy (this test would prove nothing)"
    );
}

/// Proves read-only commands write nothing into a store: a store whose meta lost its
/// layout version and chain params stays that way after `export` and `check`, and both
/// call it damaged (a store with a witness is never taken for a new one).
#[test]
fn read_only_commands_never_write_meta() {
    let tampered = Tampered::new(|db| {
        let meta = db.open_tree("meta").unwrap();
        meta.remove("store_version").unwrap();
        meta.remove("chain_params").unwrap();
    });
    for args in [["export", "--store"], ["check", "--store"]] {
        let out = ONRAMP.output(&[args[0], args[1], tampered.path.to_str().unwrap()]);
        assert!(!out.status.success(), "{} accepted a store with no meta", args[0]);
    }
    let report = assert_check_finds(&tampered.path, "meta", "store_version");
    assert!(
        report["store_version"].is_null(),
        "nothing wrote a layout version: {report:#}"
    );
    let db = sled::open(settled(&tampered.path)).unwrap();
    let meta = db.open_tree("meta").unwrap();
    assert!(meta.get("store_version").unwrap().is_none() && meta.get("chain_params").unwrap().is_none());
}

/// A tmpfs mounted for a test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(Tmpfs(at.to_path_buf()))
        } else {
            Err(text(&out.stderr))
        }
    }

    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(out.status.success(), "remount: {}", text(&out.stderr));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Proves a run on a full disk says the disk is full and the store intact (not damaged),
/// and that after space is freed the same run completes the store exactly as a run that
/// never hit the full disk. Skips (with a message) where a tmpfs cannot be mounted.
#[test]
fn a_full_disk_says_disk_full_and_the_store_stays_intact() {
    let dir = tempfile::tempdir().unwrap();
    let fs = match Tmpfs::mount(&dir.path().join("small"), "1m") {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!("skipping: cannot mount a small tmpfs here (needs root or CAP_SYS_ADMIN): {e}");
            return;
        }
    };
    let store = fs.0.join("store");
    let mut args = vec!["run", "--store", store.to_str().unwrap(), "--batch-size", "200"];
    args.extend(GEN);
    let out = ONRAMP.output(&args);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "the run fit in 1 MiB; make the disk smaller");
    assert!(
        stderr.contains("is full") && stderr.contains("The store is intact") && !stderr.contains("damaged"),
        "the error says disk full, not damage: {stderr}"
    );
    eprintln!("a run on a full disk: {}", stderr.trim());

    fs.resize("512m");
    let (ok, report, stderr) = check(&store);
    assert!(ok, "the store left by the full disk is healthy: {stderr}\n{report:#}");
    let out = ONRAMP.output(&args);
    assert!(
        out.status.success(),
        "the run after freeing space: {}",
        text(&out.stderr)
    );
    let got = ONRAMP.output(&["export", "--store", store.to_str().unwrap()]);
    assert!(
        got.stdout == healthy().export,
        "the store completed after the full disk equals a clean run's"
    );
}
