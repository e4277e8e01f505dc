//! TOML configuration: the schema, the cog registry with its descriptors, train building,
//! and errors that name file, line, column, train, cog and key.
//!
//! ```toml
//! [log]
//! level = "info"            # error | warn | info | debug | trace
//! target = "stderr"         # stderr | syslog | file:PATH
//! format = "text"           # text | json
//! [daemon]                  # used by `run --daemon`
//! pidfile = "var/deadbeat.pid"
//! [state]
//! dir = "var/state"         # checkpoints; created when a cog first saves one
//! [engine]
//! inotify = true            # false: file cogs poll instead
//! workers = 0               # worker threads for blocking jobs; 0 = one per core
//! stop_timeout = "30s"      # longest a shutdown may take (default 30s); "0s": no limit
//! [http]                    # the control server; off unless configured
//! listen = "127.0.0.1:8686" # or "unix:PATH"; not loopback: token_file required
//! token_file = "var/http.token"
//! max_connections = 64
//! idle_timeout = "10s"
//!
//! [[train]]
//! name = "main"
//!   [[train.cog]]
//!   type = "stdin"
//!   [[train.cog]]
//!   type = "stdout"
//!   format = "json"
//! ```
//! Relative paths are taken from the directory of the configuration file.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::cell::{Cell, RefCell};

use slog::Logger;
use toml::Spanned;
use toml::de::DeTable;

use crate::cogs::Registry;
use crate::daemon::http::{HttpSettings, Listen};
use crate::daemon::log::{LogFormat, LogSettings, LogTarget};
use crate::daemon::process::DaemonSettings;
use crate::engine::cog::Cog;
use crate::kit::checkpoint::Ledger;
use crate::kit::{BuildCx, Built, CogKind};
use crate::record::expr::FieldKind;
use crate::schema::{
    CogParams, ConfigError, ConfigErrorDetails, ConfigErrors, Node, NodeValue, Source,
    convert_table, parse_duration,
};

use crate::engine::train::Train;
use crate::record::Record;

/// How long a graceful stop may take unless `[engine] stop_timeout` says otherwise: long
/// enough for a drain to flush to a slow disk or peer, short enough that a stop stuck on an
/// output that never comes back (a file it may not write) still ends.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Engine settings from `[engine]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineSettings {
    /// Use inotify when available.
    pub inotify: bool,
    /// Worker threads; 0 = one per core.
    pub workers: usize,
    /// Longest a shutdown may take before the daemon stops without finishing (default
    /// [`DEFAULT_STOP_TIMEOUT`]); `None` (`stop_timeout = "0s"`): wait for every cog.
    pub stop_timeout: Option<Duration>,
}

/// One `[[train]]` as written.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Its name.
    pub name: String,
    name_span: Range<usize>,
    /// Its cogs, in order (read by `graph` and `test`, and rewritten by `test`).
    pub(crate) cogs: Vec<CogConfig>,
}

#[derive(Debug, Clone)]
pub(crate) struct CogConfig {
    pub(crate) ty: String,
    /// `name`, or `TYPE#N`.
    pub(crate) id: String,
    /// Whether `name` was given.
    pub(crate) named: bool,
    /// Whether its type, name and keys are valid, so that it can be built.
    pub(crate) valid: bool,
    pub(crate) span: Range<usize>,
    pub(crate) entries: Vec<(Spanned<String>, Node)>,
}

/// A parsed, validated configuration file.
#[derive(Debug)]
pub struct Config {
    src: Source,
    /// Directory of the file: base of relative paths.
    pub base_dir: PathBuf,
    /// `[log]`.
    pub log: LogSettings,
    /// `[daemon]`.
    pub daemon: DaemonSettings,
    /// `[state] dir`, resolved.
    pub state_dir: PathBuf,
    /// `[engine]`.
    pub engine: EngineSettings,
    /// `[http]`: the control server, when configured.
    pub http: Option<HttpSettings>,
    /// The trains, in file order.
    pub trains: Vec<TrainConfig>,
    /// Errors found while parsing, reported with those of building.
    errors: RefCell<Vec<ConfigError>>,
    /// Where `[log] target` and `[state] dir` are written, for errors about those paths.
    path_spans: Vec<(&'static str, Range<usize>)>,
}

const TOP_KEYS: &[&str] = &["log", "daemon", "state", "engine", "http", "train"];

impl Config {
    /// Reads and validates a configuration file (not yet building cogs); the error lists
    /// every mistake found.
    pub fn load(path: &Path, registry: &Registry) -> Result<Config, ConfigErrors> {
        Self::load_unchecked(path, registry)?.checked()
    }

    /// Parses and validates configuration text; `path` names it in errors and anchors
    /// relative paths. The error lists every mistake found.
    pub fn parse(path: &Path, text: String, registry: &Registry) -> Result<Config, ConfigErrors> {
        Self::parse_all(path, text, registry)?.checked()
    }

    /// The configuration, or every error its parts had.
    fn checked(self) -> Result<Config, ConfigErrors> {
        let errors = self.errors.borrow().clone();
        match ConfigErrors::from_vec(errors) {
            Some(e) => Err(e),
            None => Ok(self),
        }
    }

    /// Reads a configuration file, keeping the errors of its parts for [`Config::check`]
    /// to report with those of building; an error only when nothing can be checked
    /// further (unreadable file, invalid TOML).
    pub fn load_unchecked(path: &Path, registry: &Registry) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(Box::new(ConfigErrorDetails {
                file: path.to_path_buf(),
                at: None,
                train: None,
                cog: None,
                cog_name: None,
                key: None,
                msg: format!("cannot read the configuration: {e}"),
            }))
        })?;
        Self::parse_all(path, text, registry)
    }

    /// Builds the trains with a logger that discards, and checks the paths they and the
    /// daemon will write: every error of the configuration, parsing included, or `Ok`.
    /// What `check` runs, and `run` before it starts anything.
    pub fn check(&self, registry: &Registry) -> Result<(), ConfigErrors> {
        let discard = Logger::root(slog::Discard, slog::o!());
        self.build(registry, &discard).map(|_| ())
    }

    fn push(&self, e: ConfigError) {
        self.errors.borrow_mut().push(e);
    }

    fn parse_all(path: &Path, text: String, registry: &Registry) -> Result<Config, ConfigErrors> {
        let src = Source::new(path, text);
        let root = match DeTable::parse(&src.text) {
            Ok(t) => t,
            Err(e) => {
                let msg = e.message().trim().to_string();
                return Err(src
                    .error(e.span().as_ref(), format!("invalid TOML: {msg}"))
                    .into());
            }
        };
        let root = convert_table(root.get_ref(), &src)?;
        // Absolute, so that `[daemon] chdir` cannot change what relative paths mean.
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let base_dir = std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf());
        let mut cfg = Config {
            base_dir,
            log: LogSettings::default(),
            daemon: DaemonSettings::default(),
            state_dir: PathBuf::new(),
            engine: EngineSettings {
                inotify: true,
                workers: 0,
                stop_timeout: Some(DEFAULT_STOP_TIMEOUT),
            },
            http: None,
            trains: Vec::new(),
            errors: RefCell::new(Vec::new()),
            path_spans: Vec::new(),
            src,
        };
        let mut state_dir = "var/state".to_string();
        for (k, n) in &root {
            if let Err(e) = cfg.top_level(k, n, registry, &mut state_dir) {
                cfg.push(e);
            }
        }
        cfg.state_dir = resolve(&cfg.base_dir, &state_dir);
        if cfg.trains.is_empty() && cfg.errors.borrow().is_empty() {
            cfg.push(cfg.src.error(None, "no [[train]] defined: nothing to run"));
        }
        Ok(cfg)
    }

    /// One top-level key: a section, or the trains.
    fn top_level(
        &mut self,
        k: &Spanned<String>,
        n: &Node,
        registry: &Registry,
        state_dir: &mut String,
    ) -> Result<(), ConfigError> {
        let key = k.get_ref().as_str();
        match key {
            "log" => self.parse_log(n)?,
            "daemon" => self.parse_daemon(n)?,
            "state" => {
                for (k, v) in self.section(n, "state", &["dir"])? {
                    if k.get_ref() == "dir" {
                        self.path_spans.push(("state", v.span.clone()));
                        *state_dir = self.section_str(v, "state", "dir")?.to_string();
                    }
                }
            }
            "engine" => {
                let keys = &["inotify", "workers", "stop_timeout"];
                for (k, v) in self.section(n, "engine", keys)? {
                    match (k.get_ref().as_str(), &v.value) {
                        ("inotify", NodeValue::Bool(b)) => self.engine.inotify = *b,
                        ("workers", NodeValue::Int(i)) if (0..=1024).contains(i) => {
                            self.engine.workers = *i as usize
                        }
                        ("stop_timeout", NodeValue::Str(t)) if parse_duration(t).is_some() => {
                            // "0s" is no limit: a stop then waits for every cog.
                            self.engine.stop_timeout = parse_duration(t).filter(|d| !d.is_zero())
                        }
                        (key, _) => self.push(self.section_error(
                            v,
                            "engine",
                            key,
                            "expected inotify = true|false, workers = 0..1024, \
                             stop_timeout = \"30s\" (\"0s\": no limit)",
                        )),
                    }
                }
            }
            "http" => self.parse_http(n)?,
            "train" => self.parse_trains(n, registry),
            _ => {
                return Err(self.src.error(
                    Some(&k.span()),
                    format!(
                        "unknown top-level key {key:?} (known: {})",
                        TOP_KEYS.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    fn section<'n>(
        &self,
        n: &'n Node,
        name: &str,
        keys: &[&str],
    ) -> Result<Vec<&'n (Spanned<String>, Node)>, ConfigError> {
        let NodeValue::Table(entries) = &n.value else {
            return Err(self
                .src
                .error(Some(&n.span), format!("[{name}] must be a table")));
        };
        let mut known = Vec::with_capacity(entries.len());
        for entry in entries {
            let k = &entry.0;
            if keys.contains(&k.get_ref().as_str()) {
                known.push(entry);
            } else {
                let mut e = self.src.error(
                    Some(&k.span()),
                    format!("unknown key in [{name}] (known: {})", keys.join(", ")),
                );
                e.key = Some(k.get_ref().clone());
                self.push(e);
            }
        }
        Ok(known)
    }

    fn section_error(
        &self,
        n: &Node,
        section: &str,
        key: &str,
        msg: impl Into<String>,
    ) -> ConfigError {
        let mut e = self
            .src
            .error(Some(&n.span), format!("[{section}] {}", msg.into()));
        e.key = Some(key.to_string());
        e
    }

    fn section_str<'n>(
        &self,
        n: &'n Node,
        section: &str,
        key: &str,
    ) -> Result<&'n str, ConfigError> {
        match &n.value {
            NodeValue::Str(s) => Ok(s),
            v => Err(self.section_error(
                n,
                section,
                key,
                format!("expected a string, found {}", v.type_name()),
            )),
        }
    }

    fn parse_log(&mut self, n: &Node) -> Result<(), ConfigError> {
        for (k, v) in self.section(n, "log", &["level", "target", "format"])? {
            if let Err(e) = self.log_key(k.get_ref(), v) {
                self.push(e);
            }
        }
        Ok(())
    }

    fn log_key(&mut self, key: &str, v: &Node) -> Result<(), ConfigError> {
        {
            let s = self.section_str(v, "log", key)?;
            match key {
                "level" => {
                    self.log.level = crate::daemon::log::parse_level(s).ok_or_else(|| {
                        self.section_error(
                            v,
                            "log",
                            key,
                            format!("expected error|warn|info|debug|trace, found {s:?}"),
                        )
                    })?
                }
                "target" => {
                    let t = crate::daemon::log::parse_target(s).ok_or_else(|| {
                        self.section_error(
                            v,
                            "log",
                            key,
                            format!(
                                "expected \"stderr\", \"syslog\" or \"file:PATH\", found {s:?}"
                            ),
                        )
                    })?;
                    self.path_spans.push(("log", v.span.clone()));
                    self.log.target = match t {
                        LogTarget::File(p) => {
                            LogTarget::File(resolve(&self.base_dir, &p.to_string_lossy()))
                        }
                        t => t,
                    };
                }
                _ => {
                    self.log.format = crate::daemon::log::parse_format(s).ok_or_else(|| {
                        self.section_error(
                            v,
                            "log",
                            key,
                            format!("expected \"text\" or \"json\", found {s:?}"),
                        )
                    })?;
                    debug_assert!(matches!(self.log.format, LogFormat::Text | LogFormat::Json));
                }
            }
        }
        Ok(())
    }

    /// `[http]`: a listen address is required; one that is not loopback needs a token.
    fn parse_http(&mut self, n: &Node) -> Result<(), ConfigError> {
        let keys = &["listen", "token_file", "max_connections", "idle_timeout"];
        let entries = self.section(n, "http", keys)?;
        let mut settings = HttpSettings::new(Listen::Unix(PathBuf::new()));
        let mut listen_node = None;
        for (k, v) in entries {
            let key = k.get_ref().as_str();
            match (key, &v.value) {
                ("listen", NodeValue::Str(s)) => {
                    listen_node = Some(v);
                    if let Some(path) = s.strip_prefix("unix:").filter(|p| !p.is_empty()) {
                        settings.listen = Listen::Unix(resolve(&self.base_dir, path));
                    } else if let Ok(a) = s.parse::<std::net::SocketAddr>() {
                        settings.listen = Listen::Tcp(a);
                    } else {
                        self.push(self.section_error(
                            v,
                            "http",
                            key,
                            "listen: expected \"IP:PORT\" (such as \"127.0.0.1:8686\") or \
                             \"unix:PATH\"",
                        ));
                    }
                }
                ("token_file", NodeValue::Str(s)) => {
                    let p = resolve(&self.base_dir, s);
                    if let Err(why) = crate::daemon::http::read_token(&p) {
                        self.push(self.section_error(v, "http", key, why));
                    }
                    settings.token_file = Some(p);
                }
                ("max_connections", NodeValue::Int(i)) if (1..=10_000).contains(i) => {
                    settings.max_connections = *i as usize
                }
                ("idle_timeout", NodeValue::Str(t))
                    if parse_duration(t).is_some_and(|d| !d.is_zero()) =>
                {
                    settings.idle_timeout = parse_duration(t).unwrap_or(settings.idle_timeout)
                }
                (key, _) => self.push(self.section_error(
                    v,
                    "http",
                    key,
                    "expected listen = \"IP:PORT\" | \"unix:PATH\", token_file = \"PATH\", \
                     max_connections = 1..10000, idle_timeout = \"10s\"",
                )),
            }
        }
        let Some(listen_node) = listen_node else {
            let mut e = self.src.error(
                Some(&n.span),
                "[http] needs listen = \"IP:PORT\" or \"unix:PATH\"",
            );
            e.key = Some("listen".into());
            return Err(e);
        };
        if !settings.listen.is_local() && settings.token_file.is_none() {
            return Err(self.section_error(
                listen_node,
                "http",
                "listen",
                "listen is not a loopback address: others can reach it, so set token_file \
                 (a file holding the token that control requests must send)",
            ));
        }
        if settings.listen != Listen::Unix(PathBuf::new()) {
            self.http = Some(settings);
        }
        Ok(())
    }

    fn parse_daemon(&mut self, n: &Node) -> Result<(), ConfigError> {
        for (k, v) in self.section(n, "daemon", &["pidfile", "user", "group", "umask", "chdir"])? {
            if let Err(e) = self.daemon_key(k.get_ref(), v) {
                self.push(e);
            }
        }
        Ok(())
    }

    fn daemon_key(&mut self, key: &str, v: &Node) -> Result<(), ConfigError> {
        {
            match key {
                "umask" => {
                    let m = match &v.value {
                        NodeValue::Int(i) => u32::try_from(*i).ok(),
                        NodeValue::Str(s) => {
                            u32::from_str_radix(s.trim_start_matches("0o"), 8).ok()
                        }
                        _ => None,
                    };
                    self.daemon.umask = Some(m.filter(|m| *m <= 0o777).ok_or_else(|| {
                        self.section_error(
                            v,
                            "daemon",
                            key,
                            "expected an octal string such as \"027\"",
                        )
                    })?);
                }
                _ => {
                    let s = self.section_str(v, "daemon", key)?.to_string();
                    match key {
                        "pidfile" => self.daemon.pidfile = Some(resolve(&self.base_dir, &s)),
                        "user" => self.daemon.user = Some(s),
                        "group" => self.daemon.group = Some(s),
                        _ => self.daemon.chdir = Some(resolve(&self.base_dir, &s)),
                    }
                }
            }
        }
        Ok(())
    }

    fn parse_trains(&mut self, n: &Node, registry: &Registry) {
        let NodeValue::Array(trains) = &n.value else {
            self.push(self.src.error(
                Some(&n.span),
                "trains are written [[train]] (an array of tables)",
            ));
            return;
        };
        for t in trains {
            if let Err(e) = self.parse_train(t, registry) {
                self.push(e);
            }
        }
    }

    /// One `[[train]]`: an error when the train itself is unusable; errors of its cogs
    /// are collected, and every cog keeps its place (positions name cogs).
    fn parse_train(&mut self, t: &Node, registry: &Registry) -> Result<(), ConfigError> {
        let NodeValue::Table(entries) = &t.value else {
            return Err(self.src.error(Some(&t.span), "a [[train]] must be a table"));
        };
        let mut name: Option<(String, Range<usize>)> = None;
        let mut cog_node = None;
        for (k, v) in entries {
            match k.get_ref().as_str() {
                "name" => match &v.value {
                    NodeValue::Str(s) if !s.is_empty() => name = Some((s.clone(), v.span.clone())),
                    _ => {
                        return Err(self
                            .src
                            .error(Some(&v.span), "a train's name must be a non-empty string"));
                    }
                },
                "cog" => cog_node = Some(v),
                other => {
                    self.push(self.src.error(
                        Some(&k.span()),
                        format!("unknown key {other:?} in [[train]] (known: name, cog)"),
                    ));
                }
            }
        }
        let Some((name, name_span)) = name else {
            return Err(self.src.error(Some(&t.span), "this [[train]] has no name"));
        };
        if self.trains.iter().any(|x| x.name == name) {
            return Err(self.src.error(
                Some(&name_span),
                format!("a train named {name:?} is defined twice"),
            ));
        }
        let with_train = |mut e: ConfigError| {
            e.train = Some(name.clone());
            e
        };
        let Some(cog_node) = cog_node else {
            return Err(with_train(
                self.src
                    .error(Some(&t.span), "this train has no [[train.cog]]"),
            ));
        };
        let NodeValue::Array(items) = &cog_node.value else {
            return Err(with_train(
                self.src
                    .error(Some(&cog_node.span), "cogs are written [[train.cog]]"),
            ));
        };
        let mut cogs: Vec<CogConfig> = Vec::with_capacity(items.len());
        for (i, c) in items.iter().enumerate() {
            let (cc, errors) = self.parse_cog(&name, i, c, &cogs, registry);
            for e in errors {
                self.push(with_train(e));
            }
            cogs.push(cc);
        }
        self.trains.push(TrainConfig {
            name,
            name_span,
            cogs,
        });
        Ok(())
    }

    /// One `[[train.cog]]`, always with its place kept: `valid` is false when it had
    /// errors (returned, every one found), and it is then not built.
    fn parse_cog(
        &self,
        train: &str,
        i: usize,
        c: &Node,
        before: &[CogConfig],
        registry: &Registry,
    ) -> (CogConfig, Vec<ConfigError>) {
        let mut errors = Vec::new();
        let mut cc = CogConfig {
            ty: "?".into(),
            id: format!("?#{}", i + 1),
            named: false,
            valid: false,
            span: c.span.clone(),
            entries: Vec::new(),
        };
        let at_cog = |e: ConfigError, ty: &str| {
            let mut e = e;
            e.cog = Some((i + 1, ty.to_string()));
            e
        };
        let NodeValue::Table(entries) = &c.value else {
            errors.push(at_cog(
                self.src
                    .error(Some(&c.span), "a [[train.cog]] must be a table"),
                "?",
            ));
            return (cc, errors);
        };
        cc.entries = entries.clone();
        match entries.iter().find(|(k, _)| k.get_ref() == "type") {
            Some((
                _,
                Node {
                    value: NodeValue::Str(s),
                    ..
                },
            )) => cc.ty = s.clone(),
            Some((_, other)) => {
                errors.push(at_cog(
                    self.src
                        .error(Some(&other.span), "a cog's type must be a string"),
                    "?",
                ));
                return (cc, errors);
            }
            None => {
                errors.push(at_cog(
                    self.src.error(Some(&c.span), "this cog has no `type`"),
                    "?",
                ));
                return (cc, errors);
            }
        }
        let ty = cc.ty.clone();
        let name_node = entries.iter().find(|(k, _)| k.get_ref() == "name");
        cc.id = format!("{ty}#{}", i + 1);
        if let Some((_, n)) = name_node {
            match &n.value {
                NodeValue::Str(s) if !s.trim().is_empty() => {
                    cc.id = s.clone();
                    cc.named = true;
                }
                _ => {
                    let mut e = at_cog(
                        self.src
                            .error(Some(&n.span), "a cog's name must be a non-empty string"),
                        &ty,
                    );
                    e.key = Some("name".into());
                    errors.push(e);
                }
            }
        }
        if let Some(other) = before.iter().position(|c| c.id == cc.id) {
            let span = name_node.map_or(c.span.clone(), |(_, n)| n.span.clone());
            let mut e = at_cog(
                self.src.error(
                    Some(&span),
                    format!(
                        "cog {}#{} is already named {:?}: names are unique in a train",
                        before[other].ty,
                        other + 1,
                        cc.id
                    ),
                ),
                &ty,
            );
            e.cog_name = cc.named.then(|| cc.id.clone());
            e.key = name_node.map(|_| "name".into());
            errors.push(e);
        }
        let params = self.params(train, i, &cc);
        match registry.get(&ty) {
            None => {
                let span = entries
                    .iter()
                    .find(|(k, _)| k.get_ref() == "type")
                    .map_or(c.span.clone(), |(_, v)| v.span.clone());
                errors.push(params.error_at(
                    &span,
                    Some("type"),
                    format!("unknown cog type {ty:?} (`deadbeat cogs` lists them)"),
                ));
            }
            Some(desc) => errors.extend(params.validate(desc.name, desc.params)),
        }
        cc.valid = errors.is_empty();
        (cc, errors)
    }

    fn params<'a>(&'a self, train: &'a str, index: usize, c: &'a CogConfig) -> CogParams<'a> {
        CogParams {
            src: &self.src,
            train,
            index,
            ty: &c.ty,
            id: std::borrow::Cow::Borrowed(&c.id),
            named: c.named,
            kinds: Vec::new(),
            table_span: c.span.clone(),
            entries: &c.entries,
            base_dir: &self.base_dir,
            outer: None,
        }
    }

    /// Builds every cog of every train (opening nothing yet: cogs bind in `start`). Trains
    /// that other trains send records to get an inbox at their head.
    pub fn build(&self, registry: &Registry, logger: &Logger) -> Result<Built, ConfigErrors> {
        let mut errors = self.errors.borrow().clone();
        let cx = BuildCx {
            base_dir: &self.base_dir,
            state_dir: &self.state_dir,
            logger,
            train_names: self.trains.iter().map(|t| t.name.as_str()).collect(),
            current_train: Cell::new(0),
            current_cog: Cell::new(0),
            writes: RefCell::new(Vec::new()),
            state_used: Cell::new(false),
            mailboxes: RefCell::new(vec![None; self.trains.len()]),
            feeds: RefCell::new(Vec::new()),
            ledgers: RefCell::new(vec![(Ledger::new(), 0); self.trains.len()]),
            exactly_once: RefCell::new(Vec::new()),
        };
        let mut cogs = Vec::with_capacity(self.trains.len());
        let mut has_supply = Vec::with_capacity(self.trains.len());
        for (ti, t) in self.trains.iter().enumerate() {
            cx.current_train.set(ti);
            let mut built: Vec<Box<dyn Cog<Record>>> = Vec::with_capacity(t.cogs.len() + 1);
            let mut supply = false;
            let mut supplies = 0;
            for (i, c) in t.cogs.iter().enumerate() {
                let Some(desc) = registry.get(&c.ty) else {
                    continue;
                };
                supply |= desc.kind == CogKind::Supply;
                supplies += usize::from(desc.kind == CogKind::Supply);
                if !c.valid {
                    continue;
                }
                cx.current_cog.set(i);
                let mut params = self.params(&t.name, i, c);
                params.kinds = field_kinds(&t.cogs[..i], registry);
                match (desc.build)(&params, &cx) {
                    Ok(cog) => built.push(cog),
                    Err(e) => errors.push(e),
                }
            }
            if supplies > 1 && cx.exactly_once.borrow().contains(&ti) {
                errors.push(self.error(
                    Some(t),
                    "exactly-once output needs its train fed by one checkpointing supply \
                     only; this train has other supplies, whose records a restart would cut",
                ));
            }
            if cx.exactly_once.borrow().contains(&ti) {
                errors.extend(self.exactly_once_leaks(t));
            }
            cogs.push(built);
            has_supply.push(supply);
        }
        let mailboxes = cx.mailboxes.into_inner();
        let named = self.named_as_receivers();
        let exactly_once = cx.exactly_once.into_inner();
        let mut trains = Vec::with_capacity(self.trains.len());
        for (ti, ((t, built), (mailbox, supply))) in self
            .trains
            .iter()
            .zip(cogs)
            .zip(mailboxes.into_iter().zip(has_supply))
            .enumerate()
        {
            if mailbox.is_some() && exactly_once.contains(&ti) {
                errors.push(self.error(
                    Some(t),
                    "exactly-once output needs its train fed by one checkpointing supply \
                     only; other trains send records to this one",
                ));
            }
            // A cog of unknown type could be anything: checking the flow would only guess.
            if t.cogs.iter().any(|c| registry.get(&c.ty).is_none()) {
                continue;
            }
            // A sender that failed to build still names its receiver: no second error.
            let fed = mailbox.is_some() || named[ti];
            if !fed && !supply {
                errors.push(self.error(
                    Some(t),
                    "this train has no supply cog and no other train sends to it: \
                     no data would ever enter it",
                ));
                continue;
            }
            errors.extend(self.check_flow(t, fed, registry));
            if built.len() != t.cogs.len() {
                continue;
            }
            let mut train = Train::new(t.name.clone());
            if let Some(m) = mailbox {
                let inbox = crate::cogs::flow::inbox::Inbox::new(m);
                train.push_with_id(Box::new(inbox), "inbox".into());
            }
            for (c, cc) in built.into_iter().zip(&t.cogs) {
                train.push_with_id(c, cc.id.clone());
            }
            trains.push(train);
        }
        let feeds = cx.feeds.into_inner();
        // Reject cycles here, where the error can name the trains.
        match crate::Escapement::with_options(crate::Options {
            inotify: false,
            shutdown_on_signals: false,
            ..crate::Options::default()
        }) {
            Err(e) => errors.push(self.error(None, format!("cannot check train feeds: {e}"))),
            Ok(mut probe) => {
                for t in &self.trains {
                    let _ = probe.add_train(Train::<()>::new(t.name.clone()));
                }
                for &(from, to) in &feeds {
                    if probe.add_feed(from, to).is_err() {
                        errors.push(self.error(
                            Some(&self.trains[to]),
                            format!(
                                "trains {:?} and {:?} send records to each other (directly or \
                                 through others): neither could finish first at shutdown",
                                self.trains[from].name, self.trains[to].name
                            ),
                        ));
                    }
                }
            }
        }
        for w in cx.writes.into_inner() {
            let why = if w.dir {
                unwritable_dir(&w.path, w.create_dirs)
            } else {
                unwritable(&w.path, w.create_dirs)
            };
            if let Some(why) = why {
                let t = &self.trains[w.train];
                // Only a file's directory can be left to `create_dirs`.
                let hint = if w.create_dirs || w.dir {
                    ""
                } else {
                    " (create it, or set create_dirs = true)"
                };
                let why = why.replace(MISSING_DIR_HINT, hint);
                let params = self.params(&t.name, w.cog, &t.cogs[w.cog]);
                errors.push(params.error(w.key, why));
            }
        }
        if let LogTarget::File(p) = &self.log.target
            && let Some(why) = unwritable(p, false)
        {
            errors.push(self.path_error("log", "target", why.replace(MISSING_DIR_HINT, "")));
        }
        // Only cogs that keep checkpoints need the state directory, which is created on
        // the first save.
        if cx.state_used.get()
            && let Some(why) = unwritable_dir(&self.state_dir, true)
        {
            let why = format!("the state directory (checkpoints): {why}");
            errors.push(self.path_error("state", "dir", why));
        }
        match ConfigErrors::from_vec(errors) {
            Some(e) => Err(e),
            None => Ok(Built { trains, feeds }),
        }
    }

    /// Per train: whether a cog of another train names it as where records go (`route`,
    /// `tee`, `on_error = "train:NAME"`), read from the configuration so that it holds
    /// even when that cog did not build.
    /// Errors for the cogs of an exactly-once train that hand records to another train
    /// under their own event ids (`route`, `on_error = "train:..."`): the supply's
    /// checkpoint waits for them there, while the drain's mark moves past them, so a
    /// restart would cut back to the mark and read them and everything after them again.
    /// (`tee` sends copies under new ids: the original still reaches the drain.)
    fn exactly_once_leaks(&self, t: &TrainConfig) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        for (i, c) in t.cogs.iter().enumerate() {
            let params = self.params(&t.name, i, c);
            if c.ty == "route" {
                errors.push(params.cog_error(
                    "this train has an exactly-once output, and route hands records to \
                     another train: the output could not cut back to what the checkpoint \
                     covers (write the routed records in their own train, fed by tee)",
                ));
            }
            if let Ok(Some(v)) = params.str("on_error")
                && v.starts_with("train:")
            {
                errors.push(params.error(
                    "on_error",
                    "this train has an exactly-once output: records cannot be handed to \
                     another train here (use \"drop\" or \"keep\")",
                ));
            }
        }
        errors
    }

    fn named_as_receivers(&self) -> Vec<bool> {
        let mut named = vec![false; self.trains.len()];
        for t in &self.trains {
            for c in &t.cogs {
                for (k, n) in &c.entries {
                    let NodeValue::Str(v) = &n.value else {
                        continue;
                    };
                    let to = match k.get_ref().as_str() {
                        "train" if matches!(c.ty.as_str(), "route" | "tee") => v.as_str(),
                        "on_error" => match v.strip_prefix("train:") {
                            Some(to) => to,
                            None => continue,
                        },
                        _ => continue,
                    };
                    if let Some(i) = self
                        .trains
                        .iter()
                        .position(|x| x.name == to && x.name != t.name)
                    {
                        named[i] = true;
                    }
                }
            }
        }
        named
    }

    /// An error about a path of a section (`[log] target`, `[state] dir`).
    fn path_error(&self, section: &'static str, key: &str, why: String) -> ConfigError {
        let span = self
            .path_spans
            .iter()
            .find(|(s, _)| *s == section)
            .map(|(_, span)| span);
        let mut e = self.src.error(span, format!("[{section}] {why}"));
        e.key = Some(key.to_string());
        e
    }

    /// Checks that every record entering train `t` (from its supplies, or from other trains
    /// when it is `fed`) reaches a drain, and that every cog can receive records: a record
    /// that leaves the end of a train, or a cog placed where nothing reaches it, is data
    /// lost without a word. A `route` without `when` sends every record away, so it ends
    /// the flow as a drain does; a `tee` or a `route` with `when` does not.
    fn check_flow(&self, t: &TrainConfig, fed: bool, registry: &Registry) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        // Where the records flowing at this point come from; `None`: nothing flows here.
        let mut live = fed.then_some(None::<usize>);
        // The cog that last ended the flow, for messages.
        let mut ended_at: Option<usize> = None;
        for (i, c) in t.cogs.iter().enumerate() {
            let Some(desc) = registry.get(&c.ty) else {
                continue;
            };
            let params = self.params(&t.name, i, c);
            if live.is_none() && desc.kind != CogKind::Supply {
                let why = match ended_at {
                    Some(j) if t.cogs[j].ty == "route" => format!(
                        "cog {} before it sends every record to another train \
                         (give it a `when`, or move this cog)",
                        t.cogs[j].id
                    ),
                    Some(j) => format!(
                        "cog {} before it is a drain, which passes nothing on \
                         (to write records twice, send copies to another train with `tee`)",
                        t.cogs[j].id
                    ),
                    None => "no supply comes before it".to_string(),
                };
                errors.push(params.cog_error(format!("no record ever reaches this cog: {why}")));
            }
            match desc.kind {
                CogKind::Supply => live = Some(Some(i)),
                CogKind::Drain => {
                    live = None;
                    ended_at = Some(i);
                }
                CogKind::Transform if c.ty == "route" && params.node("when").is_none() => {
                    live = None;
                    ended_at = Some(i);
                }
                CogKind::Transform => {}
            }
        }
        if let (Some(from), Some(last)) = (live, t.cogs.len().checked_sub(1)) {
            let source = match from {
                Some(j) => format!("records from cog {}", t.cogs[j].id),
                None => "records sent from other trains".to_string(),
            };
            let params = self.params(&t.name, last, &t.cogs[last]);
            errors.push(params.cog_error(format!(
                "{source} reach no drain: they would be discarded after this cog, the last \
                 of the train; end the train with a drain, or with a `drop` cog to discard \
                 them on purpose"
            )));
        }
        errors
    }

    /// An error about the configuration as a whole, or at a train's name.
    pub fn error(&self, train: Option<&TrainConfig>, msg: impl Into<String>) -> ConfigError {
        let mut e = self.src.error(train.map(|t| &t.name_span), msg);
        e.train = train.map(|t| t.name.clone());
        e
    }
}

/// The fields whose kind `before` (the cogs before one, in train order) makes known. Kept
/// conservative: a cog that may set or change fields it does not name makes everything
/// unknown again.
fn field_kinds(before: &[CogConfig], registry: &Registry) -> Vec<(String, FieldKind)> {
    let mut known: Vec<(String, FieldKind)> = Vec::new();
    for c in before {
        let node = |key: &str| {
            c.entries
                .iter()
                .find(|(k, _)| k.get_ref() == key)
                .map(|(_, n)| n)
        };
        let table = |key: &str| match node(key).map(|n| &n.value) {
            Some(NodeValue::Table(t)) => Some(t),
            _ => None,
        };
        match c.ty.as_str() {
            // They pass records on unchanged (or not at all).
            "filter" | "route" | "tee" | "pass" | "drop" => {}
            "set" => {
                for (k, v) in table("fields").into_iter().flatten() {
                    let k = k.get_ref();
                    known.retain(|(p, _)| p != k && !p.starts_with(&format!("{k}.")));
                    match v.value {
                        NodeValue::Int(_) | NodeValue::Float(_) => {
                            known.push((k.clone(), FieldKind::Number))
                        }
                        NodeValue::Bool(_) => known.push((k.clone(), FieldKind::Bool)),
                        _ => {}
                    }
                }
            }
            "regex" if node("pattern").is_some() && node("target").is_none() => {
                known.clear();
                for (k, v) in table("types").into_iter().flatten() {
                    let kind = match &v.value {
                        NodeValue::Str(t) if t == "int" || t == "float" => FieldKind::Number,
                        NodeValue::Str(t) if t == "bool" => FieldKind::Bool,
                        _ => continue,
                    };
                    known.push((k.get_ref().clone(), kind));
                }
            }
            // Supplies add records of their own, drains end them: neither changes the
            // fields of the records that pass.
            ty if registry
                .get(ty)
                .is_some_and(|d| d.kind != CogKind::Transform) => {}
            _ => known.clear(),
        }
    }
    known
}

/// Stands in a message of [`unwritable`] where a hint on creating a missing directory goes.
const MISSING_DIR_HINT: &str = "\u{0}hint";

/// Why the file `path` cannot be created or appended to, if it cannot: the file, if it
/// exists, must be writable, and its directory must exist (or be creatable, with
/// `create_dirs`) and allow creating files. In a templated path the directory before the
/// first `{` is checked.
fn unwritable(path: &Path, create_dirs: bool) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    let dir = match bytes.iter().position(|&b| b == b'{') {
        Some(brace) => {
            let cut = bytes[..brace]
                .iter()
                .rposition(|&b| b == b'/')
                .map_or(0, |i| i + 1);
            let dir = Path::new(std::ffi::OsStr::from_bytes(&bytes[..cut]));
            if dir.as_os_str().is_empty() {
                Path::new(".").to_path_buf()
            } else {
                dir.to_path_buf()
            }
        }
        None => {
            match std::fs::metadata(path) {
                Ok(m) if m.is_dir() => return Some(format!("{} is a directory", path.display())),
                Ok(_) => {
                    return access(path, libc::W_OK)
                        .err()
                        .map(|e| format!("cannot write to {}: {e}", path.display()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Some(format!("{}: {e}", path.display())),
            }
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf()
        }
    };
    unwritable_dir(&dir, create_dirs)
}

/// Why files cannot be created in `dir`, if they cannot; a missing directory is fine when
/// it will be created (`create`) and its nearest existing ancestor allows that.
fn unwritable_dir(dir: &Path, create: bool) -> Option<String> {
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Some(format!("{} is not a directory", dir.display())),
        Ok(_) => access(dir, libc::W_OK | libc::X_OK)
            .err()
            .map(|e| format!("cannot create files in {}: {e}", dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !create {
                return Some(format!(
                    "directory {} does not exist{MISSING_DIR_HINT}",
                    dir.display()
                ));
            }
            let base = dir.ancestors().skip(1).find(|a| a.exists())?;
            unwritable_dir(base, false)
                .map(|why| format!("cannot create directory {}: {why}", dir.display()))
        }
        Err(e) => Some(format!("{}: {e}", dir.display())),
    }
}

/// `access(2)`: whether this process may use `path` as `mode` says.
fn access(path: &Path, mode: libc::c_int) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    // Converted here, so a path with a NUL byte reads "invalid input parameter".
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mode = nix::unistd::AccessFlags::from_bits_truncate(mode);
    nix::unistd::access(c.as_c_str(), mode).map_err(std::io::Error::from)
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::parse_size;

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse(Path::new("t.toml"), text.to_string(), &Registry::builtin())
    }

    #[test]
    fn a_train_needs_a_supply() {
        let c = parse("[[train]]\nname = \"m\"\n[[train.cog]]\ntype = \"stdout\"\n").unwrap();
        let discard = Logger::root(slog::Discard, slog::o!());
        let e = c.build(&Registry::builtin(), &discard).unwrap_err();
        assert_eq!(e.at, Some((2, 8)));
        assert!(e.msg.contains("no supply"), "{}", e.msg);
    }

    #[test]
    fn every_error_is_reported_in_file_order() {
        let e = parse(
            "[engine]\nworkers = -1\ninotify = 3\n[[train]]\nname = \"m\"\n[[train.cog]]\n\
             type = \"stdin\"\ncolour = 1\n[[train.cog]]\ntype = \"stdot\"\n",
        )
        .unwrap_err();
        let at: Vec<_> = e.all().iter().map(|e| e.at).collect();
        assert_eq!(
            at,
            [Some((2, 11)), Some((3, 11)), Some((8, 1)), Some((10, 8))],
            "{e}"
        );
        assert_eq!(e.to_string().lines().count(), 4, "{e}");
        assert_eq!(e.at, Some((2, 11)), "the first, through Deref");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("5 parsecs"), None);
        assert_eq!(parse_size("64KiB"), Some(65536));
        assert_eq!(parse_size("10kB"), Some(10_000));
        assert_eq!(parse_size("1 MiB"), Some(1 << 20));
        assert_eq!(parse_size("1XB"), None);
    }

    #[test]
    fn engine_stop_timeout() {
        let train = "[[train]]\nname = \"m\"\n[[train.cog]]\ntype = \"stdin\"\n";
        let c = parse(&format!("[engine]\nstop_timeout = \"2.5s\"\n{train}")).unwrap();
        assert_eq!(c.engine.stop_timeout, Some(Duration::from_millis(2500)));
        assert_eq!(
            parse(train).unwrap().engine.stop_timeout,
            Some(DEFAULT_STOP_TIMEOUT)
        );
        let c = parse(&format!("[engine]\nstop_timeout = \"0s\"\n{train}")).unwrap();
        assert_eq!(c.engine.stop_timeout, None);
        let e = parse(&format!("[engine]\nstop_timeout = \"soon\"\n{train}")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("stop_timeout"), "{e}");
        assert_eq!(e.at.map(|(line, _)| line), Some(2), "{e}");
    }

    #[test]
    fn line_and_column_of_an_unknown_key() {
        let e = parse(
            "[[train]]\nname = \"main\"\n  [[train.cog]]\n  type = \"stdin\"\n  colour = \"red\"\n",
        )
        .unwrap_err();
        assert_eq!(e.at, Some((5, 3)));
        assert_eq!(e.key.as_deref(), Some("colour"));
        assert_eq!(e.train.as_deref(), Some("main"));
        assert_eq!(e.cog, Some((1, "stdin".to_string())));
        let s = e.to_string();
        assert!(
            s.starts_with("t.toml:5:3: train \"main\", cog stdin#1, key \"colour\":"),
            "{s}"
        );
    }

    #[test]
    fn bad_toml_names_the_line() {
        let e = parse("[log]\nlevel = \n").unwrap_err();
        assert_eq!(e.at.map(|a| a.0), Some(2));
        assert!(e.msg.contains("invalid TOML"), "{}", e.msg);
    }

    #[test]
    fn unknown_cog_type_and_wrong_type() {
        let e = parse("[[train]]\nname = \"m\"\n[[train.cog]]\ntype = \"stdn\"\n").unwrap_err();
        assert_eq!(e.at, Some((4, 8)));
        assert!(e.msg.contains("unknown cog type \"stdn\""), "{}", e.msg);
        let e = parse("[[train]]\nname = \"m\"\n[[train.cog]]\ntype = \"stdin\"\n[[train.cog]]\ntype = \"stdout\"\nformat = 3\n")
            .unwrap_err();
        assert_eq!(e.at, Some((7, 10)));
        assert_eq!(e.cog, Some((2, "stdout".to_string())));
        assert!(e.msg.contains("found integer"), "{}", e.msg);
    }

    #[test]
    fn sections_and_relative_paths() {
        let c = Config::parse(
            Path::new("/etc/deadbeat/d.toml"),
            "[log]\nlevel = \"debug\"\n[state]\ndir = \"st\"\n[engine]\ninotify = false\n[[train]]\nname = \"m\"\n[[train.cog]]\ntype = \"stdin\"\n"
                .to_string(),
            &Registry::builtin(),
        )
        .unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/etc/deadbeat/st"));
        assert!(!c.engine.inotify);
        assert_eq!(c.log.level, slog::Level::Debug);
        let e = parse(
            "[log]\nlevel = \"loud\"\n[[train]]\nname = \"m\"\n[[train.cog]]\ntype = \"stdin\"\n",
        )
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("level"));
        assert_eq!(e.at, Some((2, 9)));
    }
}
