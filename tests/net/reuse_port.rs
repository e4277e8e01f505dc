//! `reuse_port`: two `deadbeat` processes listen on one TCP or UDP port and the kernel
//! spreads the clients over them (one process per core); without it the second cannot bind.

use crate::support::{free_port, line_count as lines, wait_until};
use std::fs::File;
use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::engine::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_deadbeat");
const PATIENCE: Duration = Duration::from_secs(30);

fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    wait_until(what, PATIENCE, cond);
}

struct Listener {
    child: Child,
    log: PathBuf,
    out: PathBuf,
}

impl Listener {
    fn start(dir: &Path, name: &str, cog: &str, port: u16, reuse: bool) -> Listener {
        let out = dir.join(format!("{name}.log"));
        let conf = dir.join(format!("{name}.toml"));
        std::fs::write(
            &conf,
            format!(
                "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"{cog}\"\n\
                 listen = \"127.0.0.1:{port}\"\nreuse_port = {reuse}\n\
                 [[train.cog]]\ntype = \"file_out\"\npath = {:?}\n",
                out.to_str().unwrap()
            ),
        )
        .unwrap();
        let log = dir.join(format!("{name}.err"));
        let child = Command::new(BIN)
            .args(["run", conf.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Listener { child, log, out }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn tcp_in_with_reuse_port_shares_one_port_between_processes() {
    let dir = TempDir::new("reuse-tcp");
    let port = free_port();
    let a = Listener::start(dir.path(), "a", "tcp_in", port, true);
    let b = Listener::start(dir.path(), "b", "tcp_in", port, true);
    wait_for("both listening", || {
        a.log().contains("tcp_in listening") && b.log().contains("tcp_in listening")
    });
    let n = 64;
    for i in 0..n {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        writeln!(s, "line {i}").unwrap();
    }
    wait_for("every line", || lines(&a.out) + lines(&b.out) == n);
    assert!(
        lines(&a.out) > 0 && lines(&b.out) > 0,
        "both took connections: {} and {}",
        lines(&a.out),
        lines(&b.out)
    );

    // Without reuse_port the port is taken: the third process cannot listen.
    let mut c = Listener::start(dir.path(), "c", "tcp_in", port, false);
    let st = c.child.wait().unwrap();
    assert!(!st.success());
    assert!(c.log().contains("cannot listen"), "{}", c.log());
}

#[test]
fn udp_in_with_reuse_port_shares_one_port_between_processes() {
    let dir = TempDir::new("reuse-udp");
    let port = free_port();
    let a = Listener::start(dir.path(), "a", "udp_in", port, true);
    let b = Listener::start(dir.path(), "b", "udp_in", port, true);
    wait_for("both started", || {
        a.log().contains("trains started") && b.log().contains("trains started")
    });
    // One sender per datagram: the kernel picks the socket by the sender's address.
    let n = 64;
    for i in 0..n {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(format!("datagram {i}").as_bytes(), ("127.0.0.1", port))
            .unwrap();
    }
    wait_for("every datagram", || lines(&a.out) + lines(&b.out) == n);
    assert!(
        lines(&a.out) > 0 && lines(&b.out) > 0,
        "both took datagrams: {} and {}",
        lines(&a.out),
        lines(&b.out)
    );
}
