//! The `make serve` contract: the stack comes up on the ports it is told, writes a
//! shell-sourceable stack.env when ready, answers on the API, and stops cleanly on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn serve_writes_stack_env_and_stops_cleanly_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("pil-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let env_file = dir.join("stack.env");
    let (api, emu, pms) = (free_port(), free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_pil-local"))
        .arg("serve")
        .env("PIL_API_PORT", api.to_string())
        .env("PIL_EMULATOR_PORT", emu.to_string())
        .env("PIL_PMS_PORT", pms.to_string())
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
    assert!(text.contains(&format!("PIL_API_URL=http://127.0.0.1:{api}")));
    assert!(text.contains(&format!("AWS_ENDPOINT_URL=http://127.0.0.1:{emu}")));
    assert!(
        text.lines().all(|l| l
            .split_once('=')
            .is_some_and(|(k, v)| !k.is_empty() && !v.contains(' '))),
        "shell-sourceable"
    );
    // The API answers (an unknown route is API Gateway's 404).
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://127.0.0.1:{api}/nope"),
        ])
        .output();
    if let Ok(out) = out {
        assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
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
}
