//! The `deadbeat` command line as a library function, so that a program with cogs of its
//! own is a complete daemon in a few lines (see `examples/custom_daemon.rs`).
//!
//! ```text
//! deadbeat run CONFIG [--daemon] [--quiet]      run the trains until they finish or a signal stops them
//! deadbeat check CONFIG                          validate the configuration; prints `ok` or the errors
//! deadbeat graph CONFIG [--format dot|mermaid]   the trains, their cogs and the edges between trains
//! deadbeat test CONFIG --input FILE [--train NAME]
//!                                                a train run on FILE's lines, drains printed to stdout
//! deadbeat top [--url URL]                       a running daemon's trains, rates and errors, live
//! deadbeat cogs [NAME]                           list the cogs, or one cog's parameters
//! ```
//! Exit codes: 0 clean stop, 1 runtime failure, 2 usage or configuration error.

use std::path::Path;
use std::process::ExitCode;

use crate::cogs::Registry;
use crate::daemon::config::Config;
use crate::daemon::process::{self, Detached};
use crate::daemon::{graph, http, log, progress, reference, top, trial};
use crate::prelude::*;

const USAGE: &str = "usage:
  deadbeat run CONFIG [--daemon] [--quiet]   run the trains until they finish or a signal stops them
  deadbeat check CONFIG                      validate the configuration; prints `ok` or the errors
  deadbeat graph CONFIG [--format dot|mermaid]
                                             the trains, their cogs and the edges between trains
  deadbeat test CONFIG --input FILE [--train NAME]
                                             run a train on FILE's lines, printing what its drains would write
  deadbeat top [--url URL]                   a running daemon's trains, rates and errors, live (q quits;
                                             URL: its [http] listen, default http://127.0.0.1:8686, or unix:PATH)
  deadbeat cogs [NAME]                       list the cogs, or one cog's parameters
  deadbeat cogs --markdown                   the cog reference (docs/cogs.md)
  deadbeat --version";

/// Runs the command line of `std::env::args()` with the cog types of `registry`: the
/// whole `deadbeat` binary, for a program that adds cogs of its own.
///
/// ```no_run
/// use std::process::ExitCode;
///
/// fn main() -> ExitCode {
///     let mut registry = deadbeat::cogs::Registry::builtin();
///     // registry.add(my_cog::DESCRIPTOR);
///     deadbeat::daemon::cli::main(registry)
/// }
/// ```
pub fn main(registry: Registry) -> ExitCode {
    main_from(std::env::args().skip(1), registry)
}

/// Runs the command line `args` (the arguments after the program's name) with the cog
/// types of `registry`; [`main`] passes it the process's own arguments.
///
/// Output, messages and exit codes are those of the `deadbeat` binary; `run` takes over
/// the process's signals (and, with `--daemon`, the process itself) until it returns.
pub fn main_from(args: impl IntoIterator<Item = String>, registry: Registry) -> ExitCode {
    let args: Vec<String> = args.into_iter().collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    if let Some(e) = unknown_flag(&args) {
        eprintln!("deadbeat: {e}\n{USAGE}");
        return ExitCode::from(2);
    }
    if let [cmd @ ("run" | "graph" | "test"), rest @ ..] = args.as_slice() {
        let opts = match Opts::parse(cmd, rest) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("deadbeat: {e}\n{USAGE}");
                return ExitCode::from(2);
            }
        };
        let config = Path::new(opts.config);
        return match *cmd {
            "run" => run(
                config,
                opts.flag("--daemon"),
                opts.flag("--quiet"),
                &registry,
            ),
            "graph" => {
                let format = opts.value("--format").unwrap_or("dot");
                match graph::Format::parse(format) {
                    Some(f) => graph_cmd(config, f, &registry),
                    None => {
                        eprintln!(
                            "deadbeat: unknown graph format {format:?} (dot or mermaid)\n{USAGE}"
                        );
                        ExitCode::from(2)
                    }
                }
            }
            _ => match opts.value("--input") {
                Some(input) => {
                    trial::main(config, Path::new(input), opts.value("--train"), &registry)
                }
                None => {
                    eprintln!("deadbeat: `test` needs --input FILE\n{USAGE}");
                    ExitCode::from(2)
                }
            },
        };
    }
    match args.as_slice() {
        ["check", config] => check(Path::new(config), &registry),
        ["top"] => top::main(top::DEFAULT_URL),
        ["top", "--url", url] => top::main(url),
        ["cogs"] => {
            print!("{}", reference::cog_list(&registry));
            ExitCode::SUCCESS
        }
        ["cogs", "--markdown"] => {
            print!("{}", reference::markdown(&registry));
            ExitCode::SUCCESS
        }
        ["cogs", name] => match reference::cog_help(&registry, name) {
            Some(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("deadbeat: no cog named {name:?}; `deadbeat cogs` lists them");
                ExitCode::from(2)
            }
        },
        ["--version" | "-V"] => {
            println!("deadbeat {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        ["--help" | "-h" | "help"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// The options each command takes; the first argument is the command.
const FLAGS: &[(&str, &[&str])] = &[
    ("run", &["--daemon", "--quiet"]),
    ("check", &[]),
    ("graph", &["--format"]),
    ("test", &["--input", "--train"]),
    ("cogs", &["--markdown"]),
    ("top", &["--url"]),
];

/// The options of [`FLAGS`] that take a value (`--format dot`).
const VALUED: &[&str] = &["--format", "--input", "--train", "--url"];

/// The arguments of `run`, `graph` and `test`: one configuration path and options, in
/// any order.
#[derive(Debug)]
struct Opts<'a> {
    config: &'a str,
    given: Vec<(&'a str, Option<&'a str>)>,
}

impl<'a> Opts<'a> {
    /// Parses `rest` (the arguments after the command `cmd`), whose options are known to
    /// be those of `cmd` ([`unknown_flag`] ran first).
    fn parse(cmd: &str, rest: &[&'a str]) -> Result<Opts<'a>, String> {
        let mut config = None;
        let mut given: Vec<(&'a str, Option<&'a str>)> = Vec::new();
        let mut it = rest.iter();
        while let Some(&a) = it.next() {
            if a.starts_with('-') && a.len() > 1 {
                if given.iter().any(|(g, _)| *g == a) {
                    return Err(format!("{a} is given twice"));
                }
                if VALUED.contains(&a) {
                    match it.next() {
                        Some(v) => given.push((a, Some(v))),
                        None => return Err(format!("{a} needs a value")),
                    }
                } else {
                    given.push((a, None));
                }
            } else if config.replace(a).is_some() {
                return Err(format!("`{cmd}` takes one configuration file"));
            }
        }
        let config = config.ok_or_else(|| format!("`{cmd}` needs a configuration file"))?;
        Ok(Opts { config, given })
    }

    fn flag(&self, name: &str) -> bool {
        self.given.iter().any(|(g, _)| *g == name)
    }

    fn value(&self, name: &str) -> Option<&'a str> {
        self.given
            .iter()
            .find(|(g, _)| *g == name)
            .and_then(|g| g.1)
    }
}

/// A message naming the first option the command does not take, with the closest known
/// option when one is near: a mistyped flag must not read as a generic usage error.
fn unknown_flag(args: &[&str]) -> Option<String> {
    let (cmd, rest) = args.split_first()?;
    let known = FLAGS.iter().find(|(c, _)| c == cmd)?.1;
    let bad = rest
        .iter()
        .find(|a| a.starts_with('-') && a.len() > 1 && !known.contains(a))?;
    let close = known
        .iter()
        .map(|k| (edit_distance(bad, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d);
    Some(match close {
        Some((_, k)) => format!("unknown option {bad:?} for `{cmd}` (did you mean {k:?}?)"),
        None if known.is_empty() => format!("unknown option {bad:?}: `{cmd}` takes no options"),
        None => format!(
            "unknown option {bad:?} for `{cmd}` (it takes: {})",
            known.join(", ")
        ),
    })
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1)
                .min(row[j] + 1)
                .min(diag + usize::from(ca != *cb));
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Every error of the configuration at `path`, one per line, or `ok`.
fn check(path: &Path, registry: &Registry) -> ExitCode {
    match Config::load_unchecked(path, registry).and_then(|c| c.check(registry)) {
        Ok(()) => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

/// Prints the graph of the configuration at `path` in `format`; a configuration with
/// errors gets those of `check` (exit 2).
fn graph_cmd(path: &Path, format: graph::Format, registry: &Registry) -> ExitCode {
    let discard = slog::Logger::root(slog::Discard, slog::o!());
    let graph = Config::load_unchecked(path, registry).and_then(|c| {
        let built = c.build(registry, &discard)?;
        Ok(graph::Graph::of(&c, registry, &built.feeds))
    });
    match graph {
        Ok(g) => {
            print!("{}", g.render(format));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

/// Loads and checks the configuration at `path`, detaches if asked, and serves it; the
/// progress bar of batch runs shows unless detached, `quiet`, or stderr is no terminal.
fn run(path: &Path, detach: bool, quiet: bool, registry: &Registry) -> ExitCode {
    use std::io::IsTerminal;
    let bar = !detach && !quiet && std::io::stderr().is_terminal();
    // Building cogs opens nothing, so configuration errors (all of them, as `check`
    // reports them) surface before detaching.
    let config = match Config::load_unchecked(path, registry).and_then(|c| {
        c.check(registry)?;
        Ok(c)
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut detached = None;
    if detach {
        match process::detach(&config.daemon) {
            Ok(d) => detached = Some(d),
            Err(e) => {
                eprintln!("deadbeat: cannot become a daemon: {e}");
                return ExitCode::from(1);
            }
        }
    }
    match serve(path, &config, registry, detached.as_mut(), bar) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(d) = detached.as_mut() {
                d.fail(&e);
            }
            eprintln!("deadbeat: {e}");
            ExitCode::from(1)
        }
    }
}

/// Runs the trains; in daemon mode reports readiness once they have started.
fn serve(
    path: &Path,
    config: &Config,
    registry: &Registry,
    detached: Option<&mut Detached>,
    bar: bool,
) -> Result<(), String> {
    let (logger, log_handle) = log::build(&config.log)
        .map_err(|e| format!("cannot set up logging ({:?}): {e}", config.log.target))?;
    let _pidfile = match (&config.daemon.pidfile, detached.is_some()) {
        // Detaching already took the pidfile, holding the final pid.
        (Some(p), false) => Some(process::Pidfile::acquire(p).map_err(|e| e.to_string())?),
        _ => None,
    };
    let built = config.build(registry, &logger).map_err(|e| e.to_string())?;
    let mut esc = Escapement::with_options(Options {
        inotify: config.engine.inotify,
        workers: config.engine.workers,
        stop_timeout: config.engine.stop_timeout,
        shutdown_on_signals: true,
        control_signals: true,
        logger: Some(logger.clone()),
        ..Options::default()
    })
    .map_err(|e| format!("cannot start the event loop: {e}"))?;
    esc.on_reopen(move || {
        if let Err(e) = log_handle.reopen() {
            eprintln!("deadbeat: reopening the log failed: {e}");
        }
    });
    // The live page draws the edges between trains: taken from the build before the
    // trains move into the escapement.
    let drawn = config
        .http
        .is_some()
        .then(|| graph::Graph::of(config, registry, &built.feeds));
    built.install(&mut esc).map_err(|e| e.to_string())?;
    if let Some(http) = &config.http {
        let shown = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let mut server = http::Server::new(http.clone(), shown.display().to_string())?;
        if let Some(g) = &drawn {
            server.set_graph(g);
        }
        esc.set_service(Box::new(server))
            .map_err(|e| e.to_string())?;
    }
    esc.start().map_err(|e| e.to_string())?;
    process::drop_privileges(
        config.daemon.user.as_deref(),
        config.daemon.group.as_deref(),
    )
    .map_err(|e| e.to_string())?;
    let shown = path.display().to_string();
    slog::info!(logger, "trains started"; "config" => shown, "trains" => config.trains.len());
    if let Some(d) = detached {
        d.ready();
    }
    // Supplies said what they will read as they started.
    let bar = if bar {
        progress::Bar::start()
            .map_err(|e| slog::warn!(logger, "no progress bar"; "error" => %e))
            .ok()
    } else {
        None
    };
    let result = esc.run().map_err(|e| e.to_string());
    if let Some(bar) = bar {
        bar.finish();
    }
    if let Err(e) = &result {
        slog::error!(logger, "the event loop failed"; "error" => e);
    }
    for t in esc.metrics() {
        for c in &t.cogs {
            slog::info!(logger, "final counters"; "train" => &t.name, "cog" => &c.id,
                "in" => c.data_in, "out" => c.data_out, "dropped" => c.dropped, "errors" => c.errors);
        }
    }
    slog::info!(logger, "stopped");
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cogs::flow::pass;
    use crate::kit::CogDescriptor;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_registry_given_is_the_one_served() {
        let mut registry = Registry::builtin();
        registry.add(CogDescriptor {
            name: "echo",
            ..pass::DESCRIPTOR
        });
        let code = main_from(args(&["cogs", "echo"]), registry.clone());
        assert_eq!(code, ExitCode::SUCCESS);
        let code = main_from(args(&["cogs", "echo"]), Registry::builtin());
        assert_eq!(code, ExitCode::from(2));
    }

    #[test]
    fn usage_errors_exit_2() {
        for a in [
            &["run"][..],
            &["run", "x.toml", "--deamon"],
            &["check", "x.toml", "--daemon"],
            &["cogs", "a", "b"],
            &["frobnicate"],
            &[],
        ] {
            let code = main_from(args(a), Registry::builtin());
            assert_eq!(code, ExitCode::from(2), "{a:?}");
        }
    }

    #[test]
    fn close_flags_are_suggested() {
        assert_eq!(
            unknown_flag(&["run", "x.toml", "--deamon"]).as_deref(),
            Some("unknown option \"--deamon\" for `run` (did you mean \"--daemon\"?)")
        );
        assert_eq!(
            unknown_flag(&["check", "-v"]).as_deref(),
            Some("unknown option \"-v\": `check` takes no options")
        );
        assert_eq!(unknown_flag(&["run", "x.toml", "--daemon"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
