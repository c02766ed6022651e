use clap::Parser;

fn main() {
    let cli = mnv4_lab::cli::Cli::parse();
    let arenas = if cli.command.trains() {
        mnv4_lab::ops::Arenas::One
    } else {
        mnv4_lab::ops::Arenas::PerThread
    };
    mnv4_lab::ops::retain_freed_memory(arenas);
    mnv4_lab::ops::run_candle_ops_inline();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = mnv4_lab::cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
