//! Running the `pil` binary as outside scripts do: only the given environment (stack.env).

#![allow(dead_code)] // each module uses what it needs

use std::process::Command;

/// Runs `pil ARGS` with exactly `env`; (success, stdout as JSON or Null, stderr).
pub fn pil(env: &[(String, String)], args: &[&str]) -> (bool, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pil"))
        .args(args)
        .env_clear()
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.success(),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `pil ARGS` with exactly `env` and `stdin` as its input; (success, stdout, stderr).
pub fn pil_text(env: &[(&str, &str)], args: &[&str], stdin: &[u8]) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_pil"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    // Written from another thread: pil answers each line as it reads it.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`pil`] off the async runtime's threads.
pub async fn run(env: &[(String, String)], args: &[&str]) -> (bool, serde_json::Value, String) {
    let env = env.to_vec();
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        pil(&env, &a)
    })
    .await
    .unwrap()
}
