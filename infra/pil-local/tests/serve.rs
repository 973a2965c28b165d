//! The `make serve` contract: the stack comes up on the ports it is told, writes a
//! shell-sourceable stack.env when ready, answers on the API, and stops cleanly on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The port of a `http://127.0.0.1:PORT` URL in stack.env (`KEY=URL`).
fn port_of(text: &str, key: &str) -> u16 {
    let url = text
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("stack.env lacks {key}"));
    url.strip_prefix("http://127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{key} is not a loopback URL with a port"))
}

#[test]
fn serve_writes_stack_env_and_stops_cleanly_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("pil-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let env_file = dir.join("stack.env");
    // Port 0 for all three: the stack takes free ports itself and stack.env names them (no
    // window between picking a port here and the stack binding it).
    let mut child = Command::new(env!("CARGO_BIN_EXE_pil-local"))
        .arg("serve")
        .env("PIL_API_PORT", "0")
        .env("PIL_EMULATOR_PORT", "0")
        .env("PIL_PMS_PORT", "0")
        .env("PIL_STACK_ENV", &env_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !env_file.exists() {
        assert!(
            Instant::now() < deadline,
            "stack.env not written within 60 s"
        );
        assert!(child.try_wait().unwrap().is_none(), "serve exited early");
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = std::fs::read_to_string(&env_file).unwrap();
    for key in [
        "AWS_ENDPOINT_URL=",
        "AWS_REGION=",
        "AWS_ACCESS_KEY_ID=",
        "AWS_SECRET_ACCESS_KEY=",
        "PIL_API_URL=",
        "TABLE_NAME=",
        "KMS_KEY_ID=",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(key)),
            "stack.env lacks {key}"
        );
    }
    let api = port_of(&text, "PIL_API_URL");
    let emu = port_of(&text, "AWS_ENDPOINT_URL");
    let pms = port_of(&text, "PIL_PMS_URL");
    assert_eq!(port_of(&text, "PIL_EMULATOR_URL"), emu);
    assert!(
        api != 0 && emu != 0 && pms != 0 && api != emu && emu != pms && api != pms,
        "three distinct ports: {api} {emu} {pms}"
    );
    assert!(
        text.lines().all(|l| l
            .split_once('=')
            .is_some_and(|(k, v)| !k.is_empty() && !v.contains(' '))),
        "shell-sourceable"
    );
    // The API answers (an unknown route is API Gateway's 404), over a plain socket: no
    // outside tool, so the check always runs.
    {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", api)).expect("API port open");
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        conn.write_all(b"GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut reply = String::new();
        let _ = conn.read_to_string(&mut reply);
        let status = reply.lines().next().unwrap_or_default();
        assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    }
    // SIGTERM: clean stop, nothing left behind.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
    assert!(!env_file.exists(), "stack.env removed on shutdown");
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", emu)).is_ok(),
        "emulator port released (moto stopped)"
    );
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", api)).is_ok(),
        "API port released"
    );
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", pms)).is_ok(),
        "PMS simulator port released"
    );
}
