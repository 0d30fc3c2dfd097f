//! Sets up logging, fans out to tracing and metrics, records some work and prints the
//! Prometheus exposition text: `cargo run -p isopace-observe --example metrics`.

use std::{error::Error, io, sync::Arc, time::Duration};

use isopace_observe::{
    FanoutObserver, LogOptions, MetricsRegistry, Observer, TracingObserver, attr, parse_level,
};

fn main() -> Result<(), Box<dyn Error>> {
    // Debug level shows the tracing observer's span events; its per-measurement events are
    // at trace, and the directive `isopace::metrics=trace` would show them too.
    let log = LogOptions {
        level: parse_level("debug")?,
        ..LogOptions::default()
    }
    .init()?;

    let metrics = MetricsRegistry::builder()
        .buckets("authorize_duration_seconds", [0.001, 0.01, 0.1])
        .buckets("message_bytes", [256.0, 512.0, 1024.0])
        .help("requests", "Requests handled, by outcome.")
        .build();
    let obs: Arc<dyn Observer> = Arc::new(FanoutObserver::new(vec![
        Arc::new(TracingObserver::new()),
        Arc::new(metrics.clone()),
    ]));

    let requests = obs.counter("requests");
    let sizes = obs.histogram("message_bytes");
    let active = obs.gauge("active_connections");
    for (i, mti) in ["0200", "0200", "0800", "0200"].into_iter().enumerate() {
        active.add(1.0, &[]);
        let mut span = obs.start_span("authorize", &[attr("mti", mti)]);
        std::thread::sleep(Duration::from_millis(2));
        sizes.observe(128.0 * (i + 1) as f64, &[]);
        if i == 3 {
            span.set_error(&io::Error::other("issuer unavailable"));
            requests.add(1, &[attr("outcome", "error")]);
        } else {
            requests.add(1, &[attr("outcome", "approved")]);
        }
        span.end();
        active.add(-1.0, &[]);
    }

    // Only warnings and errors from here on.
    log.set_level(tracing::Level::WARN)?;
    tracing::info!("not shown");

    print!("{}", metrics.render());
    Ok(())
}
