//! `isopace run`: the daemon — host, config watcher and deployer, driven by signals.

use std::sync::Arc;

use isopace_builtins::{
    admin::Readiness,
    daemon::{Received, Signals, Systemd},
    exec::{self, ChildSupervisor},
};
use isopace_config::{Config, ConfigWatcher};
use isopace_deploy::Deployer;
use isopace_host::{Host, error_chain};
use isopace_observe::{
    FanoutObserver, FilterOrigin, FilterSources, LogFormat, LogHandle, LogOptions, MetricsRegistry,
    TracingObserver, attr, parse_level,
};

use crate::{
    App, EXIT_FAILURE, EXIT_INVALID_CONFIG, EXIT_OK,
    cli::{Cgroups, Format, RunArgs},
    commands::load_config,
};

/// Runs the daemon on a multi-threaded runtime until a signal stops it; `flags` are the
/// variables its flags read, kept out of the configuration overrides.
pub(crate) fn run(app: App, args: RunArgs, flags: &[String]) -> u8 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{}: cannot start the async runtime: {e}", app.identity.name);
            return EXIT_FAILURE;
        }
    };
    let code = runtime.block_on(run_async(app, args, flags));
    // A child whose stop timed out must not outlive the daemon.
    exec::kill_all_children();
    code
}

async fn run_async(app: App, args: RunArgs, flags: &[String]) -> u8 {
    let config = match load_config(&args.config, flags) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{}: {}", app.identity.name, error_chain(&e));
            return EXIT_INVALID_CONFIG;
        }
    };
    let (filter, origin) = FilterSources {
        flag_level: args.log_level,
        flag_filter: args.log_filter.clone(),
        config_level: configured_level(&config),
        ..FilterSources::default()
    }
    .with_rust_log_from_env()
    .resolve();
    let log = match (LogOptions {
        level: filter.level,
        format: match args.log_format {
            Format::Text => LogFormat::Text,
            Format::Json => LogFormat::Json,
        },
        source: false,
        directives: filter.directives,
    })
    .init()
    {
        Ok(log) => log,
        // The filter is the operator's configuration, like a value of any other flag.
        Err(e @ isopace_observe::Error::InvalidDirective { .. }) => {
            let from = match origin {
                FilterOrigin::RustLog => "RUST_LOG",
                _ => "--log-filter (ISOPACE_LOG_FILTER)",
            };
            eprintln!("{}: {from}: {}", app.identity.name, error_chain(&e));
            return EXIT_INVALID_CONFIG;
        }
        Err(e) => {
            eprintln!("{}: {}", app.identity.name, error_chain(&e));
            return EXIT_FAILURE;
        }
    };
    match isopace_builtins::limits::raise_open_files() {
        Ok(Some((from, to))) => tracing::debug!(from, to, "raised the soft limit on open files"),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the soft limit on open files"),
    }
    if !args.deploy.is_dir() {
        tracing::error!(dir = %args.deploy.display(), "the deploy directory does not exist or is not a directory");
        return EXIT_INVALID_CONFIG;
    }
    let cgroups = args.exec_cgroups == Cgroups::Auto;
    let children =
        match ChildSupervisor::for_daemon(&app.identity.name, args.state_dir.as_deref(), cgroups)
            .await
        {
            Ok(children) => children,
            Err(e) => {
                tracing::error!(error = %error_chain(&e), "cannot supervise exec children");
                return EXIT_FAILURE;
            }
        };

    let metrics = MetricsRegistry::builder().process_metrics(true).build();
    let version = attr("version", &app.identity.version);
    metrics.set_info(
        "isopace_build_info",
        "The running daemon's version, as the version label; always 1.",
        &[version],
    );
    let observer = FanoutObserver::new(vec![Arc::new(TracingObserver), Arc::new(metrics.clone())]);
    #[cfg(feature = "otel")]
    let (observer, otlp) = match isopace_otel::otlp::from_env(&app.identity.name, observer) {
        Ok(built) => built,
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "cannot export over OTLP");
            let broken = matches!(e, isopace_otel::otlp::Error::Runtime(_));
            return if broken {
                EXIT_FAILURE
            } else {
                EXIT_INVALID_CONFIG
            };
        }
    };
    let host = Host::builder()
        .config(config.clone())
        .observer(Arc::new(observer))
        .shutdown_timeout(args.shutdown_timeout)
        .build();
    if args.config.config.is_some() {
        let watcher = ConfigWatcher::new(config.clone());
        host.register(watcher)
            .expect("a new host takes its first registration");
    }
    follow_log_level(&config, log, origin);

    let deployer = Deployer::builder(&host, Arc::new(app.registry), &args.deploy)
        .scan_interval(args.scan_interval)
        .watch(!args.no_watch)
        .build();
    let deployments = deployer.handle();
    host.register(deployer)
        .expect("the deployer's name is unique in a new host");
    // What components read from their env, provided before the first scan builds one.
    let readiness = Readiness::new(host.downgrade(), Some(deployments.clone()));
    let env = host.env();
    env.insert_extension(deployments.clone());
    env.insert_extension(metrics);
    env.insert_extension(readiness.clone());
    env.insert_extension(children);
    for provide in app.extensions {
        provide(env);
    }

    // Installed before start, so a signal during start is not lost.
    let mut signals = match Signals::new() {
        Ok(signals) => signals,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return EXIT_FAILURE;
        }
    };
    tracing::info!(
        deploy = %args.deploy.display(),
        config = ?args.config.config,
        version = app.identity.version,
        "{} starting",
        app.identity.name
    );
    if let Err(e) = host.start().await {
        tracing::error!(error = %error_chain(&e), "start failed");
        return EXIT_FAILURE;
    }
    tokio::spawn(readiness.track());
    let systemd = Systemd::from_env();
    tokio::spawn({
        let (deployments, host, systemd) = (deployments.clone(), host.clone(), systemd.clone());
        async move {
            deployments.wait_initial_scan().await;
            systemd.ready();
            systemd.follow(&host);
            tracing::info!("ready: initial deploy finished");
        }
    });

    let escalation = async {
        match args.exit_on_critical_failure {
            true => host.critical_failure().await,
            false => std::future::pending().await,
        }
    };
    tokio::pin!(escalation);
    let escalated = loop {
        tokio::select! {
            received = signals.next() => match received {
                Received::Hangup => {
                    tracing::info!("SIGHUP: reloading the config, rescanning the deploy directory, retrying failed components");
                    let reload = systemd.reloading();
                    if config.path().is_some()
                        && let Err(e) = config.reload()
                    {
                        tracing::error!(error = %error_chain(&e), "config reload failed; keeping the old values");
                    }
                    let (host, deployments) = (host.clone(), deployments.clone());
                    tokio::spawn(async move {
                        // A failed scan is logged by the deployer; the retries do not need it.
                        let _ = deployments.scan().await;
                        host.retry_failed().await;
                        reload.done();
                    });
                }
                stop => {
                    tracing::info!(signal = stop.name(), "shutdown requested");
                    break false;
                }
            },
            name = &mut escalation => {
                tracing::error!(component = name, "a critical component is failed for good; shutting down (--exit-on-critical-failure)");
                break true;
            }
        }
    };
    systemd.stopping();
    tracing::info!(
        timeout = %isopace_observe::Rounded(args.shutdown_timeout),
        "shutting down: stopping components in reverse order"
    );
    let stop = host.stop_within(args.shutdown_timeout);
    tokio::pin!(stop);
    // A shutdown the daemon began itself has had no signal yet: the first one is not a second.
    let mut signalled = !escalated;
    loop {
        tokio::select! {
            result = &mut stop => {
                #[cfg(feature = "otel")]
                drop(otlp); // flushes the last spans and metrics
                return match result {
                    Ok(()) if escalated => {
                        tracing::info!("stopped after a critical failure");
                        EXIT_FAILURE
                    }
                    Ok(()) => {
                        tracing::info!("stopped cleanly");
                        EXIT_OK
                    }
                    Err(e) => {
                        tracing::error!(error = %error_chain(&e), "shutdown finished with errors");
                        EXIT_FAILURE
                    }
                };
            }
            again = signals.next() => {
                if let Some(code) = again.forced_exit_code()
                    && std::mem::replace(&mut signalled, true)
                {
                    tracing::warn!(signal = again.name(), "second signal during shutdown: exiting now");
                    exec::kill_all_children();
                    std::process::exit(code);
                }
            }
        }
    }
}

fn configured_level(config: &Config) -> Option<tracing::Level> {
    let text = config.get("logging.level")?;
    let text = text.as_str()?;
    // An unknown level in the file keeps the current one rather than guessing.
    parse_level(text).ok()
}

/// Applies `logging.level` from every successful reload (file watcher or SIGHUP), unless
/// the level came from higher up (`origin`): then each new value is logged once, as ignored.
fn follow_log_level(config: &Config, log: LogHandle, origin: FilterOrigin) {
    let mut reloads = config.subscribe();
    let config = config.clone();
    let mut seen = configured_level(&config);
    tokio::spawn(async move {
        while reloads.changed().await.is_ok() {
            let Some(level) = configured_level(&config) else {
                continue;
            };
            if !origin.config_applies() {
                if seen.replace(level) != Some(level) {
                    tracing::warn!(%level, "the config's logging.level changed; ignored, since the log filter comes from {origin}");
                }
            } else if level != log.level() {
                match log.set_level(level) {
                    Ok(()) => tracing::info!(%level, "log level changed by the config"),
                    Err(e) => tracing::error!(error = %e, "cannot change the log level"),
                }
            }
        }
    });
}
