//! Supplied cogs built from their typed settings in Rust, without TOML, and run in an
//! escapement built by hand.

use std::rc::Rc;

use deadbeat::Escapement;
use deadbeat::engine::mailbox::Mailbox;
use deadbeat::prelude::*;
use deadbeat::record::{Key, Path as FieldPath, Record, Value};

use crate::engine::{Log, Probe, counting_supply, opts, run};

/// A datum of the test's own.
#[derive(Debug, Clone)]
struct Hit {
    id: EventId,
    status: Value,
}

/// A drain that logs each record as `out JSON` and acknowledges it.
fn json_drain(log: &Log) -> Probe<Record> {
    let l = log.clone();
    Probe::new("drain", log).on_process(move |r: Record, _, cx| {
        let mut json = Vec::new();
        r.write_json(&mut json);
        l.push(format!("out {}", String::from_utf8_lossy(&json)));
        cx.event_done(r.id);
    })
}

/// Records with one text field `key`, numbered from `first`.
fn records(key: &str, first: EventId, values: &[&str]) -> Vec<Record> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let mut r = Record::new();
            r.id = first + i as EventId;
            r.insert(Key::new(key), Value::from(*v));
            r
        })
        .collect()
}

fn status<'a>(h: &'a Hit, p: &FieldPath) -> Option<&'a Value> {
    (p.to_string() == "status").then_some(&h.status)
}

fn hits(statuses: &[i64]) -> Vec<Hit> {
    statuses
        .iter()
        .enumerate()
        .map(|(i, s)| Hit {
            id: 100 + i as EventId,
            status: Value::Int(*s),
        })
        .collect()
}

/// filter → route → drain, with `drop` at the end of the routed train: what `filter`
/// drops and what `drop` ends are acknowledged, as are the hits the drain writes.
#[test]
fn flow_cogs_from_typed_settings() {
    use deadbeat::cogs::flow::drop::{Discard, DropSettings};
    use deadbeat::cogs::flow::filter::{Filter, FilterSettings};
    use deadbeat::cogs::flow::inbox::Inbox;
    use deadbeat::cogs::flow::route::{Route, RouteSettings};

    let id = || Getter::new(|h: &Hit| Some(&h.id));
    let filter = Filter::from_settings(
        &FilterSettings {
            keep: Some("status >= 400".into()),
            ..Default::default()
        },
        status,
        id(),
    )
    .unwrap();
    let mailbox = Rc::new(Mailbox::new());
    let route = Route::from_settings(
        &RouteSettings {
            train: "five".into(),
            when: Some("status >= 500".into()),
        },
        mailbox.clone(),
        status,
        id(),
    )
    .unwrap();

    let log = Log::default();
    let acked = Rc::new(std::cell::RefCell::new(Vec::<EventId>::new()));
    let a = acked.clone();
    let supply = counting_supply("supply", &log, hits(&[200, 404, 503, 301, 500, 410]))
        .on_event_done(move |ids, _| a.borrow_mut().extend(ids));
    let l = log.clone();
    let main = Train::new("main").cog(supply).cog(filter).cog(route).cog(
        Probe::new("drain", &log).on_process(move |h: Hit, _, cx| {
            l.push(format!("kept {}", h.id));
            cx.event_done(h.id);
        }),
    );
    let five = Train::new("five")
        .cog(Inbox::new(mailbox))
        .cog(Discard::from_settings(&DropSettings::default(), id()));
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(main).unwrap();
    esc.add_train(five).unwrap();
    esc.add_feed(0, 1).unwrap();
    run(&mut esc, &log);

    assert_eq!(log.only(&["kept "]), ["kept 101", "kept 105"]);
    let mut all = acked.borrow().clone();
    all.sort();
    assert_eq!(all, (100..106).collect::<Vec<_>>(), "each hit acknowledged");
    let m = esc.metrics();
    let five = m.iter().find(|t| t.name == "five").unwrap();
    assert_eq!(five.cogs.last().unwrap().dropped, 2, "{m:?}");
}

/// The checks a type cannot make come back from the constructors as errors at a key.
#[test]
fn flow_settings_checked_without_toml() {
    use deadbeat::cogs::flow::filter::{Filter, FilterSettings};

    let id = || Getter::new(|h: &Hit| Some(&h.id));
    let err = Filter::from_settings(&FilterSettings::default(), status, id()).unwrap_err();
    assert_eq!(err.key, "keep");
    assert!(err.msg.starts_with("give a condition in `keep`"), "{err}");
    let both = FilterSettings {
        keep: Some("status > 1".into()),
        drop: Some("status > 2".into()),
    };
    let err = Filter::from_settings(&both, status, id()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "drop: give either `keep` or `drop`, not both"
    );
    let bad = FilterSettings {
        keep: Some("status >> 1".into()),
        ..Default::default()
    };
    let err = Filter::from_settings(&bad, status, id()).unwrap_err();
    assert!(err.msg.starts_with("in the condition at column"), "{err}");
}

/// set → copy → rename → remove over records, each from its typed settings: fields apply in
/// the order given, a nested table names dotted paths, templates render from the record.
#[test]
fn fields_cogs_from_typed_settings() {
    use deadbeat::cogs::fields::copy::{CopyField, CopySettings};
    use deadbeat::cogs::fields::remove::{Remove, RemoveSettings};
    use deadbeat::cogs::fields::rename::{Rename, RenameSettings};
    use deadbeat::cogs::fields::set::{Set, SetSettings};
    use deadbeat::cogs::fields::{FieldTable, take_at};
    use deadbeat::record::{Key, Record};

    let set_at = |p: FieldPath| Setter::new(move |r: &mut Record, v: Value| r.set_path(&p, v));
    let mut geo = toml::Table::new();
    geo.insert("country".into(), "FR".into());
    let set = Set::from_settings(
        &SetSettings {
            fields: FieldTable(vec![
                ("seen".into(), "{host}/{app}".into()),
                ("env".into(), "prod".into()),
                ("n".into(), 3.into()),
                ("geo".into(), toml::Value::Table(geo)),
            ]),
        },
        set_at,
        |t| Box::new(move |r: &Record, out: &mut Vec<u8>| t.write(r, out)),
    )
    .unwrap();
    let copy = CopyField::from_settings(
        &CopySettings {
            fields: [("host", "client_raw")].into_iter().collect(),
        },
        |p| Getter::new(move |r: &Record| r.get_path(&p)),
        set_at,
    )
    .unwrap();
    let rename = Rename::from_settings(
        &RenameSettings {
            fields: [("app", "service.name")].into_iter().collect(),
        },
        take_at,
        set_at,
    )
    .unwrap();
    let remove = Remove::from_settings(
        &RemoveSettings {
            fields: vec!["offset".into(), "missing".into()],
        },
        take_at,
    )
    .unwrap();

    let mut r = Record::new();
    r.id = 7;
    r.insert(Key::new("host"), Value::from("web1"));
    r.insert(Key::new("app"), Value::from("api"));
    r.insert(Key::new("offset"), Value::Int(40));
    let log = Log::default();
    let train = Train::new("t")
        .cog(counting_supply("supply", &log, vec![r]))
        .cog(set)
        .cog(copy)
        .cog(rename)
        .cog(remove)
        .cog(json_drain(&log));
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(train).unwrap();
    run(&mut esc, &log);
    assert_eq!(
        log.only(&["out "]),
        [
            r#"out {"host":"web1","seen":"web1/api","env":"prod","n":3,"geo":{"country":"FR"},"client_raw":"web1","service":{"name":"api"}}"#
        ]
    );

    let err = Remove::from_settings(&RemoveSettings::default(), take_at).unwrap_err();
    assert_eq!(err.to_string(), "fields: give at least one field");
    let err = CopyField::from_settings(
        &CopySettings {
            fields: [("a", 1)].into_iter().collect(),
        },
        |p| Getter::new(move |r: &Record| r.get_path(&p)),
        set_at,
    )
    .unwrap_err();
    assert!(
        err.msg
            .starts_with("expected a field path (a string) for \"a\""),
        "{err}"
    );
}

/// anonymise → cidr_tag over records, from typed settings, with `on_error` read for any
/// datum by `on_error::for_datum`: a value that is no address is dropped (and acknowledged).
#[test]
fn ip_cogs_from_typed_settings() {
    use deadbeat::cogs::ip::anonymise::{Anonymise, AnonymiseMode, AnonymiseSettings};
    use deadbeat::cogs::ip::cidr_tag::{CidrTag, CidrTagSettings, Networks};
    use deadbeat::kit::on_error;
    use deadbeat::record::{self, Key, Record};

    let id = || Getter::new(|r: &Record| Some(&r.id));
    let reason = || {
        Setter::new(|r: &mut Record, why: String| {
            r.insert(Key::new("error"), Value::Str(why));
        })
    };
    let s = AnonymiseSettings {
        ipv4_prefix: 16,
        ..Default::default()
    };
    let drop = on_error::for_datum(&s.on_error, |_| None, id(), reason()).unwrap();
    let anon = Anonymise::from_settings(&s, record::field_mut(&s.field).unwrap(), drop).unwrap();
    let t = CidrTagSettings {
        networks: Networks(vec![
            ("lan".into(), vec!["10.1.0.0/16".into()]),
            ("any4".into(), vec!["0.0.0.0/0".into()]),
        ]),
        ..Default::default()
    };
    let keep = on_error::for_datum(&t.on_error.on_error, |_| None, id(), reason()).unwrap();
    let tag = CidrTag::from_settings(
        &t,
        record::field(&t.field).unwrap().get,
        record::field(&t.target).unwrap().set,
        keep,
    )
    .unwrap();

    let data = records("client", 50, &["10.1.2.3", "not an address", "192.0.2.77"]);
    let log = Log::default();
    let acked = Rc::new(std::cell::RefCell::new(Vec::<EventId>::new()));
    let a = acked.clone();
    let train = Train::new("t")
        .cog(
            counting_supply("supply", &log, data)
                .on_event_done(move |ids, _| a.borrow_mut().extend(ids)),
        )
        .cog(anon)
        .cog(tag)
        .cog(json_drain(&log));
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(train).unwrap();
    run(&mut esc, &log);
    assert_eq!(
        log.only(&["out "]),
        [
            r#"out {"client":"10.1.0.0","tags":["lan","any4"]}"#,
            r#"out {"client":"192.0.0.0","tags":["any4"]}"#,
        ]
    );
    let mut all = acked.borrow().clone();
    all.sort();
    assert_eq!(all, [50, 51, 52], "the dropped one is acknowledged too");

    // What a type cannot check comes back at its key.
    let bad = AnonymiseSettings {
        ipv6_prefix: 129,
        ..Default::default()
    };
    let err = deadbeat::cogs::ip::anonymise::Anonymiser::from_settings(&bad).unwrap_err();
    assert_eq!(
        err.to_string(),
        "ipv6_prefix: expected 0 to 128 bits, found 129"
    );
    let keyed = AnonymiseSettings {
        mode: AnonymiseMode::Keyed,
        key: Some("short".into()),
        ..Default::default()
    };
    let err = deadbeat::cogs::ip::anonymise::Anonymiser::from_settings(&keyed).unwrap_err();
    assert_eq!(err.key, "key");
    assert!(err.msg.contains("at least 16"), "{err}");
    let err = CidrTag::from_settings(
        &CidrTagSettings::default(),
        record::field("client").unwrap().get,
        record::field("tags").unwrap().set,
        on_error::for_datum("keep", |_| None, id(), reason()).unwrap(),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "networks: give at least one network");
}

/// regex (a pattern with types) → csv_parse over records, from typed settings: fields are
/// typed and merged, a line that does not match follows `on_error`.
#[test]
fn parse_cogs_from_typed_settings() {
    use deadbeat::cogs::parse::csv_parse::{CsvParse, CsvParseSettings};
    use deadbeat::cogs::text::presets::PresetName;
    use deadbeat::cogs::text::regex::{GroupTypes, Parser, Regex, RegexSettings};
    use deadbeat::kit::on_error::{ErrorAction, OnError};
    use deadbeat::record::{self, Key, Record};

    let on_error = |a| {
        OnError::new(
            a,
            Getter::new(|r: &Record| Some(&r.id)),
            Setter::new(|r: &mut Record, why: String| {
                r.insert(Key::new("error"), Value::Str(why));
            }),
        )
    };
    let message = || record::bytes_at(FieldPath::parse("message").unwrap());
    let regex = Regex::from_settings(
        &RegexSettings {
            pattern: Some(r"^(?P<n>\d+) (?P<rest>.*)$".into()),
            types: Some(GroupTypes(vec![("n".into(), "int".into())])),
            ..Default::default()
        },
        message(),
        record::merge_into(None),
        on_error(ErrorAction::Keep),
    )
    .unwrap();
    let csv = CsvParse::from_settings(
        &CsvParseSettings {
            columns: vec!["a".into(), "b".into()],
            delimiter: ";".into(),
            input: deadbeat::cogs::parse::common::InputSettings {
                field: "rest".into(),
                target: Some("csv".into()),
            },
            ..Default::default()
        },
        record::bytes_at(FieldPath::parse("rest").unwrap()),
        record::merge_into(Some(FieldPath::parse("csv").unwrap())),
        on_error(ErrorAction::Drop),
    )
    .unwrap();

    let data = records("message", 10, &["7 x;y", "no number"]);
    let log = Log::default();
    let train = Train::new("t")
        .cog(counting_supply("supply", &log, data))
        .cog(regex)
        .cog(csv)
        .cog(json_drain(&log));
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(train).unwrap();
    run(&mut esc, &log);
    // The second line keeps its regex failure, then has no `rest` for csv_parse: dropped.
    assert_eq!(
        log.only(&["out "]),
        [r#"out {"message":"7 x;y","n":7,"rest":"x;y","csv":{"a":"x","b":"y"}}"#]
    );

    // What a type cannot check comes back as an error; about the whole, with no key.
    let err = Parser::from_settings(&RegexSettings::default()).unwrap_err();
    assert_eq!(err.key, "");
    assert!(
        err.msg
            .starts_with("give a `pattern` with named groups or a `preset`")
    );
    let both = RegexSettings {
        preset: Some(PresetName::Sshd),
        types: Some(GroupTypes(vec![("n".into(), "int".into())])),
        ..Default::default()
    };
    assert_eq!(Parser::from_settings(&both).unwrap_err().key, "types");
    let err = deadbeat::cogs::parse::csv_parse::CsvParser::from_settings(&CsvParseSettings {
        columns: vec!["a".into()],
        delimiter: "\"".into(),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(err.to_string(), r"delimiter: must not be a quote, \r or \n");
}
