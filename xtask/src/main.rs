//! Project tasks: `cargo xtask <task>`.
//!
//! - `e2e [pytest args]`: the end-to-end suite in its private namespaces (root; after
//!   `scripts/setup` and `cargo build`).
//! - `test`: the whole suite, as CI runs it (`scripts/test`).
//! - `demo`: the main job on the embedded default (`scripts/demo`).
//! - `bench [--quick] [--runs N] [more]`: the benchmark suite (`scripts/bench`: release build,
//!   then tests/bench/bench.py in a private network + mount namespace; root).

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Run the end-to-end suite; extra arguments go to pytest.
    E2e {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up and run every test, as CI does.
    Test,
    /// Set up and run the demo.
    Demo,
    /// Run the benchmark suite (root): gateway against direct, mitmproxy, memory, CPU cost.
    Bench {
        /// The CI smoke: each load 1 s, one run, no large transfers, mitmproxy or callgrind.
        #[arg(long)]
        quick: bool,
        /// Repetitions of every scenario (default 5; 1 with --quick).
        #[arg(long)]
        runs: Option<u32>,
        /// More options for tests/bench/bench.py (--seconds, --transfer-gb, --profile, --skip).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask lives one level below the workspace root")?
        .to_owned();
    let (program, args) = match Cli::parse().task {
        Task::E2e { args } => (root.join("tests/e2e/run"), args),
        Task::Test => (root.join("scripts/test"), Vec::new()),
        Task::Demo => (root.join("scripts/demo"), Vec::new()),
        Task::Bench { quick, runs, args } => {
            (root.join("scripts/bench"), bench_args(quick, runs, args))
        }
    };
    let status = Command::new(&program)
        .args(&args)
        .current_dir(&root)
        .status()
        .with_context(|| format!("starting {}", program.display()))?;
    if !status.success() {
        bail!("{} failed: {status}", program.display());
    }
    Ok(())
}

/// The command line of scripts/bench for `cargo xtask bench`.
fn bench_args(quick: bool, runs: Option<u32>, rest: Vec<String>) -> Vec<String> {
    let mut args = Vec::new();
    if quick {
        args.push("--quick".to_owned());
    }
    if let Some(runs) = runs {
        args.extend(["--runs".to_owned(), runs.to_string()]);
    }
    args.extend(rest);
    args
}
