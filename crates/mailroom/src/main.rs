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
                // Every log line names the node (several may share one database).
                let node = serve::node_id(&config.data_dir)?;
                init_logging(&config.log_format, &node);
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

/// Writes `node=<id>` (text) or a `"node"` field (JSON) in front of every log line.
struct WithNode<F> {
    node: String,
    inner: F,
    json: bool,
}

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for WithNode<F>
where
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        if self.json {
            let mut line = String::new();
            self.inner.format_event(
                ctx,
                tracing_subscriber::fmt::format::Writer::new(&mut line),
                event,
            )?;
            match line.strip_prefix('{') {
                Some(rest) => write!(writer, "{{\"node\":{:?},{rest}", self.node),
                None => writer.write_str(&line),
            }
        } else {
            write!(writer, "node={} ", self.node)?;
            self.inner.format_event(ctx, writer, event)
        }
    }
}

fn init_logging(format: &str, node: &str) {
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
        builder
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(WithNode {
                node: node.to_owned(),
                inner: tracing_subscriber::fmt::format().json(),
                json: true,
            })
            .init();
    } else {
        builder
            .event_format(WithNode {
                node: node.to_owned(),
                inner: tracing_subscriber::fmt::format()
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
                json: false,
            })
            .init();
    }
}
