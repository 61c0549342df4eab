//! The `mailroom` binary: `mailroom serve` runs the API and the workers; every other command is a
//! client of a running server, mirroring the REST API.

mod cli;

mod config;
mod serve;

use clap::Parser;

/// mimalloc instead of the system allocator: a request's buffers are allocated on one worker
/// thread and freed on another, and glibc's allocator spent a tenth of the CPU under load on that.
/// Built without transparent huge pages (`no_thp` in the workspace manifest): with them every
/// arena chunk was resident and zeroed 2 MiB at a time, and peak RSS under the outbound benchmark
/// was 60 MiB instead of 38, for no throughput.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    let json_errors = args.global.output == cli::Output::Json;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the async runtime");
    let result = runtime.block_on(async move {
        match args.command {
            cli::Command::Serve(serve_args) => {
                let config = config::Config::resolve(&serve_args)?;
                init_logging(&config.log_format);
                serve::run(config).await
            }
            cli::Command::Admin(cli::AdminCommand::Recover(serve_args)) => {
                let config = config::Config::resolve(&serve_args)?;
                serve::recover_admin(config).await
            }
            cli::Command::Store(cli::StoreCommand::Copy(copy_args)) => {
                serve::copy_store(copy_args).await
            }
            command => cli::run(args.global, command).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) if json_errors => {
            eprintln!("{}", cli::error_as_json(&error));
            std::process::ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,sqlx=warn,tower_http=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // When a log line cannot be written (the log on a full disk), tracing-subscriber would
        // report it with eprintln!, which panics when stderr cannot be written either — and took
        // the store's writer thread down with it. A lost log line must not stop the server.
        .log_internal_errors(false)
        // Colours only for a person at a terminal, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
