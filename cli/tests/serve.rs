//! `kiln serve` as a process: it prints its address, answers HTTP there, and refuses bad start-up
//! arguments with a message and a non-zero exit.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

fn kiln() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.env_remove("KILN_DEVICE").env_remove("KILN_API_KEY");
    cmd
}

/// A bare HTTP/1.1 GET; returns the whole answer.
fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: kiln\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn serves_the_bundled_model_on_the_printed_address() {
    let mut child = kiln()
        .args(["--device", "cpu", "serve", "--port", "0", "--api-key", "k"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let health = http_get(&addr, "/health");
    let models = http_get(&addr, "/sdapi/v1/sd-models");
    let _ = child.kill();
    let _ = child.wait();
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"status\":\"ok\""), "{health}");
    assert!(models.starts_with("HTTP/1.1 401"), "{models}");
}

#[test]
fn bad_start_up_arguments_fail_clearly() {
    let out = kiln()
        .args(["serve", "-m", "/no/such/model", "--port", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/no/such/model") && err.contains("does not exist"),
        "{err}"
    );

    let out = kiln()
        .args(["serve", "--models-dir", "/no/such/dir", "--port", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("models folder"));
}
