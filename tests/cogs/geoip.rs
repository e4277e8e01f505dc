//! `geoip` in an escapement built by hand, over databases the test writes with the
//! `mmdb_writer` Python module (installed with pip when missing; the test skips, saying
//! why, when it cannot build one): fields of known addresses, misses, a non-address per
//! `on_error`, a reload by rename-over, a bad database refused at start.

use std::path::Path as FsPath;
use std::process::Command;
use std::rc::Rc;

use deadbeat::Escapement;
use deadbeat::cogs::enrich::geoip::{Geoip, GeoipSettings};
use deadbeat::kit::on_error;
use deadbeat::prelude::*;
use deadbeat::record::{self, Key, Path, Record, Value};

use crate::engine::{Log, Probe, TempDir, opts, run};

const WRITER: &str = r#"
import sys
from netaddr import IPSet
from mmdb_writer import MMDBWriter
w = MMDBWriter(ip_version=6, database_type='GeoLite2-City', languages=['en'], description='test', ipv4_compatible=True)
w.insert_network(IPSet(['192.0.2.0/24']), {'country': {'iso_code': sys.argv[2], 'names': {'en': sys.argv[3]}}, 'city': {'names': {'en': 'Paris'}}, 'location': {'latitude': 48.5, 'longitude': 2.25}, 'autonomous_system_number': 64500, 'autonomous_system_organization': 'Example AS'})
w.insert_network(IPSet(['2001:db8::/32']), {'country': {'iso_code': 'DE', 'names': {'en': 'Germany'}}})
w.to_db_file(sys.argv[1])
"#;

/// Writes a database whose 192.0.2.0/24 is in country `code`; `Err(why)` when it cannot.
fn write_db(path: &FsPath, code: &str, name: &str) -> Result<(), String> {
    let build = || {
        Command::new("python3")
            .args(["-c", WRITER, path.to_str().unwrap(), code, name])
            .output()
    };
    let out = build().map_err(|e| format!("python3: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let _ = Command::new("python3")
        .args(["-m", "pip", "install", "-q", "mmdb-writer", "netaddr"])
        .output();
    let out = build().map_err(|e| format!("python3: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn geoip(s: &GeoipSettings) -> Geoip<Record> {
    let f = record::field(&s.field).unwrap();
    let target = (!s.target.is_empty()).then(|| Path::parse(&s.target).unwrap());
    let on_error = on_error::for_datum(
        &s.on_error.on_error,
        |_| None,
        Getter::new(|r: &Record| Some(&r.id)),
        Setter::new(|r: &mut Record, why: String| {
            r.insert(Key::new("error"), Value::Str(why));
        }),
    )
    .unwrap();
    Geoip::from_settings(s, f.get, record::merge_into(target), on_error).unwrap()
}

fn rec(id: EventId, client: Value) -> Record {
    let mut r = Record::new();
    r.id = id;
    r.insert(Key::new("client"), client);
    r
}

fn run_once(g: Geoip<Record>, records: Vec<Record>) -> (Vec<String>, u64) {
    let log = Log::default();
    let l = log.clone();
    let supply = crate::engine::counting_supply("s", &log, records);
    let drain = Probe::new("d", &log).on_process(move |r: Record, _, cx| {
        let mut out = Vec::new();
        r.write_json(&mut out);
        l.push(format!("out {}", String::from_utf8(out).unwrap()));
        cx.event_done(r.id);
    });
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(Train::new("main").cog(supply).cog(g).cog(drain))
        .unwrap();
    run(&mut esc, &log);
    let errors = esc.metrics()[0].cogs[1].errors;
    (log.only(&["out "]), errors)
}

#[test]
fn addresses_get_their_fields_and_non_addresses_follow_on_error() {
    let dir = TempDir::new("geoip");
    let path = dir.path().join("city.mmdb");
    if let Err(why) = write_db(&path, "FR", "France") {
        eprintln!("skipped: cannot build a MaxMind DB ({why})");
        return;
    }
    let s = GeoipSettings {
        path: path.clone(),
        fields: vec![
            "country_code".into(),
            "city".into(),
            "asn".into(),
            "latitude".into(),
        ],
        ..Default::default()
    };
    let g = geoip(&s);
    let counters = g.counters();
    let (out, errors) = run_once(
        g,
        vec![
            rec(1, Value::from("192.0.2.7")),
            rec(2, Value::Ip("2001:db8::1".parse().unwrap())),
            rec(3, Value::from("10.0.0.1")),
            rec(4, Value::from("not-an-address")),
            rec(5, Value::Int(3)),
        ],
    );
    assert_eq!(
        out,
        [
            r#"out {"client":"192.0.2.7","geo":{"country_code":"FR","city":"Paris","asn":64500,"latitude":48.5}}"#,
            r#"out {"client":"2001:db8::1","geo":{"country_code":"DE"}}"#,
            r#"out {"client":"10.0.0.1"}"#,
            r#"out {"client":"not-an-address","error":"field \"client\": not an IP address (a string value)"}"#,
            r#"out {"client":3,"error":"field \"client\": not an IP address (a int value)"}"#,
        ]
    );
    assert_eq!(errors, 2);
    assert_eq!((counters.hits(), counters.misses()), (2, 1));

    // With on_error = "drop", prefix and the top level.
    let mut s = GeoipSettings {
        path: path.clone(),
        target: String::new(),
        prefix: "geo_".into(),
        fields: vec!["country".into()],
        ..Default::default()
    };
    s.on_error.on_error = "drop".into();
    let (out, errors) = run_once(
        geoip(&s),
        vec![
            rec(1, Value::from("nope")),
            rec(2, Value::from("192.0.2.1")),
        ],
    );
    assert_eq!(
        out,
        [r#"out {"client":"192.0.2.1","geo_country":"France"}"#]
    );
    assert_eq!(errors, 1);
}

#[test]
fn a_database_renamed_over_is_reloaded_and_a_bad_one_refused() {
    let dir = TempDir::new("geoip-reload");
    let path = dir.path().join("city.mmdb");
    if let Err(why) = write_db(&path, "FR", "France") {
        eprintln!("skipped: cannot build a MaxMind DB ({why})");
        return;
    }
    let next = dir.path().join("next.mmdb");
    write_db(&next, "IT", "Italy").unwrap();
    let s = GeoipSettings {
        path: path.clone(),
        fields: vec!["country_code".into()],
        poll_interval: std::time::Duration::from_secs(3600),
        ..Default::default()
    };
    let g = geoip(&s);
    let counters = g.counters();
    let c = Rc::clone(&counters);
    let log = Log::default();
    let mut n: u64 = 0;
    let mut seen_at = None;
    let supply = Probe::<Record>::new("s", &log)
        .supply()
        .on_start(|cx| {
            cx.timer_every(std::time::Duration::from_millis(2), 0)?;
            Ok(())
        })
        .on_wake(move |_, _, out, cx| {
            if n == 3 {
                std::fs::rename(&next, &path).unwrap();
            }
            if seen_at.is_none() && c.reloads() == 1 {
                seen_at = Some(n);
            }
            if seen_at.is_some_and(|at| n >= at + 3) {
                cx.exhausted();
                return;
            }
            out.push(rec(n, Value::from("192.0.2.9")));
            n += 1;
        });
    let l = log.clone();
    let drain = Probe::new("d", &log).on_process(move |r: Record, _, cx| {
        let mut out = Vec::new();
        r.write_json(&mut out);
        l.push(format!("out {}", String::from_utf8(out).unwrap()));
        cx.event_done(r.id);
    });
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(Train::new("main").cog(supply).cog(g).cog(drain))
        .unwrap();
    run(&mut esc, &log);
    let out = log.only(&["out "]);
    assert!(out[0].contains("\"FR\""), "{out:#?}");
    assert!(out.last().unwrap().contains("\"IT\""), "{out:#?}");
    assert_eq!(counters.reloads(), 1);

    // A file that is not a MaxMind DB fails the start, naming the file.
    let bad = dir.path().join("bad.mmdb");
    std::fs::write(&bad, "not a database").unwrap();
    let g = geoip(&GeoipSettings {
        path: bad.clone(),
        ..Default::default()
    });
    let mut esc = Escapement::with_options(opts()).unwrap();
    let log = Log::default();
    let supply = crate::engine::counting_supply("s", &log, Vec::<Record>::new());
    esc.add_train(Train::new("main").cog(supply).cog(g))
        .unwrap();
    let err = esc.run().unwrap_err().to_string();
    assert!(err.contains(&bad.display().to_string()), "{err}");
}
