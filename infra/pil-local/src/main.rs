//! `pil-local run`: the whole pipeline on the local stack, a scripted scenario, a story, and
//! a non-zero exit if any expected outcome did not happen.
//! `pil-local serve`: the same stack, left running until SIGINT/SIGTERM; writes
//! `target/local/stack.env` when ready.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use pil_local::stack::{Stack, StackOptions, workspace_root};

#[derive(Parser, Debug)]
#[command(
    name = "pil-local",
    about = "The Practice Intelligence Layer on a local AWS emulator (moto), no account needed"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Bring the stack up, play the scripted scenario, print the story, shut down.
    Run,
    /// Bring the stack up and keep it running until interrupted.
    Serve,
}

#[tokio::main]
async fn main() -> ExitCode {
    pil_local::init_stderr_logging("warn");
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Run => run().await,
        Cmd::Serve => serve().await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pil-local: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<ExitCode> {
    let root = workspace_root();
    let mut opts = StackOptions::from_env(root);
    opts.tick = None;
    let stack = Stack::start(opts).await?;
    let story = pil_local::scenario::run(&stack).await;
    stack.stop().await;
    let story = story?;
    #[allow(clippy::print_stdout)]
    {
        println!("{}", story.render());
    }
    Ok(if story.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn serve() -> Result<ExitCode> {
    let root = workspace_root();
    let env_file = std::env::var_os("PIL_STACK_ENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target/local/stack.env"));
    let stack = Stack::start(StackOptions::from_env(root)).await?;
    stack.write_env_file(&env_file)?;
    eprintln!(
        "pil-local: stack ready. API {} · emulator {} · PMS simulator {}",
        stack.api_url, stack.moto.url, stack.pms.url
    );
    eprintln!(
        "pil-local: wrote {} (source it, then use `pil`). Ctrl-C stops.",
        env_file.display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    eprintln!("pil-local: stopping");
    stack.stop().await;
    let _ = std::fs::remove_file(&env_file);
    Ok(ExitCode::SUCCESS)
}
