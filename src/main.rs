use clap::Parser;

fn main() {
    mnv4_lab::ops::retain_freed_memory();
    mnv4_lab::ops::shorten_candle_spinning();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = mnv4_lab::cli::Cli::parse();
    if let Err(e) = mnv4_lab::cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
