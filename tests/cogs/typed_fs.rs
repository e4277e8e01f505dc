//! File cogs built from their typed settings in Rust, without TOML, and run in an
//! in-process escapement.

use std::path::Path;

use deadbeat::cogs::fs::file_in::{FileIn, FileInSettings, Missing};
use deadbeat::cogs::fs::file_out::{FileOut, FileOutSettings, Fsync, Mode};
use deadbeat::cogs::fs::tail::{Tail, TailSettings};
use deadbeat::kit::checkpoint::CheckpointStore;
use deadbeat::kit::format::{Format, FormatSettings};
use deadbeat::prelude::*;
use deadbeat::record::Record;

use crate::engine::{Log, TempDir, run_train};

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn file_in_to_file_out_from_typed_settings() {
    let dir = TempDir::new("typed-fs-in");
    let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    std::fs::write(&a, "one\ntwo\n").unwrap();
    std::fs::write(&b, "three\nno newline").unwrap();
    let out = dir.path().join("sub/out.log");
    let supply = FileIn::from_settings(&FileInSettings {
        // A missing file between two readable ones, skipped with a warning.
        paths: vec![a, dir.path().join("missing.log"), b],
        missing: Missing::Warn,
        ..Default::default()
    })
    .unwrap();
    let drain = FileOut::from_settings(
        &FileOutSettings {
            path: out.clone(),
            create_dirs: Some(true),
            fsync: Fsync::Always,
            mode: Mode::Truncate,
            ..Default::default()
        },
        None,
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("sub")).unwrap();
    std::fs::write(&out, "earlier run\n").unwrap();
    let log = Log::default();
    run_train(Train::<Record>::new("t").cog(supply).cog(drain), &log);
    assert_eq!(read(&out), "one\ntwo\nthree\nno newline\n");
}

#[test]
fn tail_without_follow_to_templated_file_out_keeps_its_checkpoint() {
    let dir = TempDir::new("typed-fs-tail");
    let logs = dir.path().join("logs");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(logs.join("app.log"), "a1\na2\n").unwrap();
    std::fs::write(logs.join("app.gz"), "skipped\n").unwrap();
    let settings = TailSettings {
        paths: vec![logs.join("app.*")],
        exclude: vec!["*.gz".into()],
        follow: false,
        ..Default::default()
    };
    let out_template = dir.path().join("out/{message}.json");
    let run = |settings: &TailSettings| {
        let store = CheckpointStore::new(&state, "typed.state");
        let tail = Tail::from_settings(&settings.clone(), Some(store)).unwrap();
        let drain = FileOut::from_settings(
            &FileOutSettings {
                path: out_template.clone(),
                format: FormatSettings {
                    format: Format::Json,
                    ..Default::default()
                },
                ..Default::default()
            },
            None,
        )
        .unwrap();
        run_train(
            Train::<Record>::new("t").cog(tail).cog(drain),
            &Log::default(),
        );
    };
    run(&settings);
    let a1 = read(&dir.path().join("out/a1.json"));
    assert!(
        a1.contains("\"message\":\"a1\"") && a1.ends_with("\n"),
        "{a1}"
    );
    assert!(read(&dir.path().join("out/a2.json")).contains("\"offset\":3"));
    assert!(!dir.path().join("out/skipped.json").exists());
    assert!(state.join("typed.state").exists());
    // The second run goes on from the checkpoint: only the new line.
    std::fs::OpenOptions::new()
        .append(true)
        .open(logs.join("app.log"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"a3\n"))
        .unwrap();
    run(&settings);
    assert_eq!(read(&dir.path().join("out/a1.json")).lines().count(), 1);
    assert!(read(&dir.path().join("out/a3.json")).contains("\"offset\":6"));
}

#[test]
fn typed_settings_are_checked_without_toml() {
    let key = |r: Result<(), deadbeat::schema::SettingError>| r.unwrap_err().key;
    assert_eq!(
        key(FileIn::from_settings(&FileInSettings::default()).map(drop)),
        "paths"
    );
    let no_lines = FileInSettings {
        paths: vec!["x".into()],
        max_line_bytes: 0,
        ..Default::default()
    };
    assert_eq!(
        key(FileIn::from_settings(&no_lines).map(drop)),
        "max_line_bytes"
    );
    // Exactly-once output needs the ledger a checkpointing supply carries.
    let eo = FileOutSettings {
        path: "out.log".into(),
        exactly_once: true,
        ..Default::default()
    };
    assert_eq!(
        key(FileOut::from_settings(&eo, None).map(drop)),
        "exactly_once"
    );
    let bad_template = FileOutSettings {
        path: "out/{a}/../x".into(),
        ..Default::default()
    };
    assert_eq!(
        key(FileOut::from_settings(&bad_template, None).map(drop)),
        "path"
    );
    let tail = |s: TailSettings| key(Tail::from_settings(&s, None).map(drop));
    let paths = vec!["x.log".into()];
    assert_eq!(tail(TailSettings::default()), "paths");
    assert_eq!(
        tail(TailSettings {
            paths: paths.clone(),
            max_open_files: 0,
            ..Default::default()
        }),
        "max_open_files"
    );
    assert_eq!(
        tail(TailSettings {
            paths,
            exclude: vec!["[a".into()],
            ..Default::default()
        }),
        "exclude"
    );
}
