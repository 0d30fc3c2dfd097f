//! Loading, overrides, getters, decoding, provenance, reload and concurrent reads.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use isopace_config::{Config, Error, LoadOptions, Source};
use serde::Deserialize;
use serde_json::json;

fn env(vars: &[&str]) -> LoadOptions {
    LoadOptions::new()
        .env_prefix("ISO")
        .environ(vars.iter().map(|v| v.to_string()).collect())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn load_reads_a_json_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "app.json",
        r#"{"logging": {"level": "debug"}, "n": 3}"#,
    );
    let config = Config::load(&file, LoadOptions::new()).unwrap();
    assert_eq!(config.path(), Some(file.as_path()));
    assert_eq!(config.string("logging.level", "info"), "debug");
    assert_eq!(config.get("n"), Some(json!(3)));
    assert_eq!(config.get("missing.key"), None);
    assert_eq!(config.generation(), 0);
}

#[test]
fn empty_or_whitespace_files_are_an_empty_tree() {
    let dir = tempfile::tempdir().unwrap();
    for text in ["", " \n\t\n"] {
        let file = write(dir.path(), "empty.json", text);
        let config = Config::load(&file, LoadOptions::new()).unwrap();
        assert_eq!(config.get(""), Some(json!({})));
    }
    assert_eq!(
        Config::parse(b"", LoadOptions::new()).unwrap().get(""),
        Some(json!({}))
    );
}

#[test]
fn parse_errors_name_the_file_and_line_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "bad.json", "{\n  \"a\": 1,\n  \"b\": ?\n}\n");
    let err = Config::load(&file, LoadOptions::new()).unwrap_err();
    let Error::Parse {
        file: Some(named),
        line,
        column,
        ..
    } = &err
    else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(named, &file);
    assert_eq!(*line, 3);
    assert!(*column > 0);
    assert_eq!(
        err.to_string(),
        format!("invalid JSON in {}:{line}:{column}", file.display())
    );
    let err = Config::parse(b"{\"a\": }", LoadOptions::new()).unwrap_err();
    assert!(
        err.to_string().starts_with("invalid JSON in <bytes>:1:"),
        "{err}"
    );
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("absent.json");
    let err = Config::load(&file, LoadOptions::new()).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if path == &file),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("cannot read config file {}", file.display())
    );
    // The operating system's error is the source, so its kind can still be matched.
    let source = std::error::Error::source(&err).expect("the io::Error is the source");
    let io = source
        .downcast_ref::<std::io::Error>()
        .expect("the source is an io::Error");
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn overrides_replace_scalars_create_keys_and_ignore_other_prefixes() {
    let config = Config::parse(
        br#"{"link": {"pool": 2}, "flag": true}"#,
        env(&[
            "ISO_LINK_POOL=4",
            "ISO_FLAG=false",
            "ISO_NEW_KEY=hello",
            "OTHER_IGNORED=1",
        ]),
    )
    .unwrap();
    assert_eq!(config.int("link.pool", 0), 4);
    assert_eq!(config.get("link.pool"), Some(json!(4)));
    assert!(!config.bool("flag", true));
    assert_eq!(config.get("flag"), Some(json!(false)));
    assert_eq!(config.get("new.key"), Some(json!("hello")));
    assert_eq!(config.get("other"), None);
    assert_eq!(config.get("ignored"), None);
}

#[test]
fn a_prefix_may_end_with_its_underscore() {
    let vars = || vec!["ISO_LINK_POOL=4".to_owned(), "ISO__X=1".to_owned()];
    let with = Config::parse(
        br#"{"link": {"pool": 2}}"#,
        LoadOptions::new().env_prefix("ISO_").environ(vars()),
    )
    .unwrap();
    let without = Config::parse(
        br#"{"link": {"pool": 2}}"#,
        LoadOptions::new().env_prefix("ISO").environ(vars()),
    )
    .unwrap();
    assert_eq!(with.int("link.pool", 0), 4);
    assert_eq!(
        with.source_of("link.pool"),
        Some(Source::Env("ISO_LINK_POOL".into()))
    );
    assert_eq!(with.redacted(), without.redacted());
}

#[test]
fn override_values_take_json_scalar_types() {
    let config = Config::parse(
        b"{}",
        env(&[
            "ISO_A=5",
            "ISO_B=true",
            "ISO_C=hello",
            "ISO_D=[1",
            "ISO_E=null",
            "ISO_F=0123",
        ]),
    )
    .unwrap();
    assert_eq!(config.get("a"), Some(json!(5)));
    assert_eq!(config.get("b"), Some(json!(true)));
    assert_eq!(config.get("c"), Some(json!("hello")));
    assert_eq!(config.get("d"), Some(json!("[1")));
    assert_eq!(config.get("e"), Some(json!(null)));
    assert_eq!(config.get("f"), Some(json!("0123")));
}

#[test]
fn an_override_through_a_declared_scalar_is_skipped() {
    let config = Config::parse(br#"{"server":"plain"}"#, env(&["ISO_SERVER_PORT=8080"])).unwrap();
    assert_eq!(config.get("server"), Some(json!("plain")));
    assert_eq!(config.get("server.port"), None);
    assert_eq!(config.source_of("server"), Some(Source::Inline));
}

#[test]
fn an_override_does_not_replace_a_declared_section() {
    let config = Config::parse(br#"{"link": {"pool": 2}}"#, env(&["ISO_LINK=off"])).unwrap();
    assert_eq!(config.get("link"), Some(json!({"pool": 2})));
}

#[test]
fn underscores_match_declared_keys_first() {
    let config = Config::parse(
        br#"{"link": {"max_conns": 10, "Idle_Timeout": "1s"}}"#,
        env(&[
            "ISO_LINK_MAX_CONNS=64",
            "ISO_LINK_IDLE_TIMEOUT=2s",
            "ISO_FRESH_MAX_CONNS=3",
        ]),
    )
    .unwrap();
    assert_eq!(config.int("link.max_conns", 0), 64);
    assert_eq!(config.get("link.max"), None);
    assert_eq!(
        config.duration("link.Idle_Timeout", Duration::ZERO),
        Duration::from_secs(2)
    );
    // Nothing declared under `fresh`: each underscore is a level.
    assert_eq!(config.int("fresh.max.conns", 0), 3);
}

#[test]
fn double_underscore_separates_levels_explicitly() {
    let config = Config::parse(b"{}", env(&["ISO_LINK__MAX_CONNS=64"])).unwrap();
    assert_eq!(config.get("link"), Some(json!({"max_conns": 64})));
}

#[test]
fn the_process_environment_is_the_default() {
    // cargo sets CARGO_PKG_NAME for the test process; it stands in for a deployment's
    // variables without mutating the environment.
    let name = std::env::var("CARGO_PKG_NAME").expect("cargo sets CARGO_PKG_NAME");
    let config = Config::parse(
        br#"{"name": "declared"}"#,
        LoadOptions::new().env_prefix("CARGO_PKG"),
    )
    .unwrap();
    assert_eq!(config.string("name", ""), name);
    assert_eq!(
        config.source_of("name"),
        Some(Source::Env("CARGO_PKG_NAME".into()))
    );
}

#[test]
fn getters_convert_and_fall_back_to_defaults() {
    let config = Config::parse(
        br#"{"s": "x", "port": "8080", "n": 7, "half": 2.5, "on": "true", "off": false,
            "t1": "250ms", "t2": "1m30s", "t3": 5, "t4": 1e19, "t5": -3, "t6": "300us",
            "t7": "10ns", "t8": "2h", "t9": "1.5s"}"#,
        LoadOptions::new(),
    )
    .unwrap();
    let def = Duration::from_secs(42);
    assert_eq!(config.string("s", "d"), "x");
    assert_eq!(config.string("n", "d"), "7");
    assert_eq!(config.string("nope", "d"), "d");
    assert_eq!(config.int("port", 0), 8080);
    assert_eq!(config.int("n", 0), 7);
    assert_eq!(config.int("half", -1), -1);
    assert_eq!(config.int("s", -1), -1);
    assert!(config.bool("on", false));
    assert!(!config.bool("off", true));
    assert!(config.bool("s", true));
    assert_eq!(config.duration("t1", def), Duration::from_millis(250));
    assert_eq!(config.duration("t2", def), Duration::from_secs(90));
    assert_eq!(config.duration("t3", def), Duration::from_secs(5));
    assert_eq!(config.duration("t4", def), def);
    assert_eq!(config.duration("t5", def), def);
    assert_eq!(config.duration("t6", def), Duration::from_micros(300));
    assert_eq!(config.duration("t7", def), Duration::from_nanos(10));
    assert_eq!(config.duration("t8", def), Duration::from_secs(7200));
    assert_eq!(config.duration("t9", def), Duration::from_millis(1500));
    assert_eq!(config.duration("s", def), def);
}

#[test]
fn string_keeps_the_variables_spelling() {
    let config = Config::parse(
        b"{}",
        env(&[
            "ISO_DB_PIN=1.50",
            "ISO_DB_TOKEN=123456789012345678901234567890",
        ]),
    )
    .unwrap();
    assert_eq!(config.string("db.pin", ""), "1.50");
    assert_eq!(
        config.string("db.token", ""),
        "123456789012345678901234567890"
    );
}

#[derive(Debug, Deserialize, PartialEq)]
struct Link {
    pool: u32,
    host: String,
    #[serde(with = "isopace_config::serde_duration")]
    timeout: Duration,
    #[serde(default)]
    tags: Vec<String>,
}

#[test]
fn unmarshal_key_decodes_a_subtree_into_a_struct() {
    let config = Config::parse(
        br#"{"link": {"pool": 2, "host": "h", "timeout": "1.5s"}, "other": 1}"#,
        env(&["ISO_LINK_POOL=4"]),
    )
    .unwrap();
    let link: Link = config.unmarshal_key("link").unwrap();
    assert_eq!(
        link,
        Link {
            pool: 4,
            host: "h".into(),
            timeout: Duration::from_millis(1500),
            tags: vec![],
        }
    );

    #[derive(Deserialize)]
    struct Root {
        link: Link,
        other: i64,
    }
    let root: Root = config.unmarshal().unwrap();
    assert_eq!((root.link.pool, root.other), (4, 1));
}

#[test]
fn numbers_from_the_environment_decode_into_text_fields() {
    #[derive(Deserialize)]
    struct Db {
        password: String,
        port: u16,
    }
    let config = Config::parse(
        br#"{"db": {"password": "x", "port": 1}}"#,
        env(&["ISO_DB_PASSWORD=12345", "ISO_DB_PORT=5432"]),
    )
    .unwrap();
    let db: Db = config.unmarshal_key("db").unwrap();
    assert_eq!((db.password.as_str(), db.port), ("12345", 5432));
}

#[test]
fn unmarshal_errors_name_the_path_and_field_and_missing_keys_are_their_own() {
    let config = Config::parse(
        br#"{"link": {"pool": "many", "host": "h", "timeout": 1}}"#,
        LoadOptions::new(),
    )
    .unwrap();
    let err = config.unmarshal_key::<Link>("link").unwrap_err();
    match &err {
        Error::Unmarshal { path, field, .. } => {
            assert_eq!((path.as_str(), field.as_str()), ("link", "pool"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "cannot decode config key `link` at field `pool`"
    );
    assert!(std::error::Error::source(&err).is_some());

    let err = config.unmarshal_key::<Link>("links").unwrap_err();
    assert!(
        matches!(&err, Error::MissingKey { path } if path == "links"),
        "{err:?}"
    );
}

#[test]
fn provenance_names_the_file_or_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "app.json",
        r#"{"link": {"pool": 2, "host": "h"}}"#,
    );
    let config = Config::load(&file, env(&["ISO_LINK_POOL=4", "ISO_NEW_KEY=v"])).unwrap();
    assert_eq!(
        config.source_of("link.pool"),
        Some(Source::Env("ISO_LINK_POOL".into()))
    );
    assert_eq!(
        config.source_of("link.host"),
        Some(Source::File(file.clone()))
    );
    assert_eq!(config.source_of("link"), Some(Source::File(file.clone())));
    assert_eq!(
        config.source_of("new"),
        Some(Source::Env("ISO_NEW_KEY".into()))
    );
    assert_eq!(config.source_of("absent"), None);
    assert_eq!(Source::Env("ISO_A".into()).to_string(), "env ISO_A");

    let entries = config.entries();
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["link.host", "link.pool", "new.key"]);
    assert_eq!(entries[1].value, json!(4));
    assert_eq!(entries[1].source, Source::Env("ISO_LINK_POOL".into()));
    assert_eq!(entries[0].source, Source::File(file));
}

#[test]
fn secrets_are_redacted_in_dumps() {
    let config = Config::parse(
        br#"{"db": {"host": "h", "password": "p", "api_key": "k"},
            "auth": {"token": "t", "private_key": "pk"}, "name": "n"}"#,
        env(&["ISO_CLIENT_SECRET=s"]),
    )
    .unwrap();
    assert_eq!(
        config.redacted(),
        json!({
            "db": {"host": "h", "password": "***", "api_key": "***"},
            "auth": {"token": "***", "private_key": "***"},
            "name": "n",
            "client": {"secret": "***"}
        })
    );
    let secret: Vec<String> = config
        .entries()
        .into_iter()
        .filter(|e| e.secret)
        .map(|e| e.path)
        .collect();
    assert_eq!(
        secret,
        [
            "auth.private_key",
            "auth.token",
            "client.secret",
            "db.api_key",
            "db.password"
        ]
    );
    // Reading the value itself is not redacted: only dumps are.
    assert_eq!(config.string("db.password", ""), "p");
}

#[test]
fn reload_picks_up_the_changed_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "app.json", r#"{"a": 1}"#);
    let config = Config::load(&file, env(&["ISO_B=7"])).unwrap();
    let clone = config.clone();
    let mut changes = config.subscribe();
    write(dir.path(), "app.json", r#"{"a": 2}"#);
    config.reload().unwrap();
    assert_eq!(clone.int("a", 0), 2);
    assert_eq!(clone.int("b", 0), 7, "overrides are re-applied");
    assert_eq!(config.generation(), 1);
    assert!(changes.has_changed().unwrap());
    assert_eq!(*changes.borrow_and_update(), 1);
}

#[test]
fn a_failed_reload_keeps_the_old_tree() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "app.json", r#"{"a": 1}"#);
    let config = Config::load(&file, LoadOptions::new()).unwrap();
    let changes = config.subscribe();

    write(dir.path(), "app.json", r#"{"a": "#);
    assert!(matches!(config.reload(), Err(Error::Parse { line: 1, .. })));
    assert_eq!(config.int("a", 0), 1);

    std::fs::remove_file(&file).unwrap();
    assert!(matches!(config.reload(), Err(Error::Io { .. })));
    assert_eq!(config.int("a", 0), 1);

    assert_eq!(config.generation(), 0);
    assert!(!changes.has_changed().unwrap());
}

#[test]
fn validators_run_on_load_and_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "app.json", r#"{"port": 80}"#);
    let options = LoadOptions::new().validator(|tree| match tree["port"].as_u64() {
        Some(1..=65535) => Ok(()),
        _ => Err("port must be 1-65535".into()),
    });
    let config = Config::load(&file, options.clone()).unwrap();

    write(dir.path(), "app.json", r#"{"port": 0}"#);
    let err = config.reload().unwrap_err();
    assert!(
        matches!(&err, Error::Invalid { source, .. } if source.to_string() == "port must be 1-65535")
    );
    assert_eq!(
        err.to_string(),
        format!("config {} rejected by a validator", file.display())
    );
    assert_eq!(config.int("port", 0), 80);

    assert!(matches!(
        Config::load(&file, options),
        Err(Error::Invalid { .. })
    ));
}

#[test]
fn a_validators_own_error_is_the_source() {
    let options = LoadOptions::new().validator(|_| {
        Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, "key file").into())
    });
    let err = Config::parse(b"{}", options).unwrap_err();
    assert_eq!(err.to_string(), "config <bytes> rejected by a validator");
    let io = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .expect("the validator's io::Error is the source");
    assert_eq!(io.kind(), std::io::ErrorKind::PermissionDenied);
}

#[test]
fn reload_of_a_parsed_config_is_a_successful_no_op() {
    let config = Config::parse(br#"{"a": 1}"#, LoadOptions::new()).unwrap();
    config.reload().unwrap();
    assert_eq!(config.generation(), 0);
    assert_eq!(config.int("a", 0), 1);
    assert_eq!(config.path(), None);
}

#[test]
fn a_snapshot_stays_on_its_generation() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "app.json", r#"{"a": 1, "b": 1}"#);
    let config = Config::load(&file, LoadOptions::new()).unwrap();
    let snapshot = config.snapshot();
    write(dir.path(), "app.json", r#"{"a": 2, "b": 2}"#);
    config.reload().unwrap();
    assert_eq!((snapshot.int("a", 0), snapshot.int("b", 0)), (1, 1));
    assert_eq!(snapshot.generation(), 0);
    assert_eq!(snapshot.get_ref("a"), Some(&json!(1)));
    assert_eq!(config.snapshot().int("a", 0), 2);
}

#[test]
fn a_handle_decodes_once_per_generation_and_sees_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "app.json",
        r#"{"link": {"pool": 2, "host": "h", "timeout": "1s"}}"#,
    );
    let config = Config::load(&file, LoadOptions::new()).unwrap();
    let mut pool = config.handle::<u32>("link.pool");
    let mut link = config.handle::<Link>("link");
    let mut missing = config.handle::<u32>("link.size");
    assert_eq!(pool.get(), Some(&2));
    assert_eq!(link.get().map(|l| l.timeout), Some(Duration::from_secs(1)));
    assert!(matches!(missing.try_get(), Err(Error::MissingKey { .. })));
    assert_eq!(missing.get(), None);

    // Reads within one generation return the very same decoded value.
    let first: *const u32 = pool.get().unwrap();
    let second: *const u32 = pool.get().unwrap();
    assert_eq!(first, second);

    write(
        dir.path(),
        "app.json",
        r#"{"link": {"pool": 9, "host": "h", "timeout": "1s", "size": 3}}"#,
    );
    config.reload().unwrap();
    assert_eq!(pool.get(), Some(&9));
    assert_eq!(pool.generation(), 1);
    assert_eq!(missing.get(), Some(&3));
    assert_eq!(pool.clone().get(), Some(&9));
    assert_eq!(pool.load().as_deref(), Some(&9));
}

#[cfg(feature = "toml")]
#[test]
fn toml_files_load_into_the_same_tree() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "app.toml",
        "[link]\npool = 2\ntimeout = \"5s\"\nidle = nan\nlinger = inf\n",
    );
    let config = Config::load(&file, env(&["ISO_LINK_POOL=3"])).unwrap();
    assert_eq!(config.int("link.pool", 0), 3);
    assert_eq!(
        config.duration("link.timeout", Duration::ZERO),
        Duration::from_secs(5)
    );
    // NaN and infinity have no JSON form: they read as absent, never as a panic.
    let def = Duration::from_secs(9);
    assert_eq!(config.duration("link.idle", def), def);
    assert_eq!(config.duration("link.linger", def), def);
    assert_eq!(config.int("link.linger", -1), -1);
}

#[cfg(feature = "yaml")]
#[test]
fn yaml_files_load_into_the_same_tree() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "app.yml", "link:\n  pool: 2\n  timeout: 5s\n");
    let config = Config::load(&file, env(&["ISO_LINK_POOL=3"])).unwrap();
    assert_eq!(config.int("link.pool", 0), 3);
    assert_eq!(
        config.duration("link.timeout", Duration::ZERO),
        Duration::from_secs(5)
    );
    // JSON has no NaN: the YAML reader rejects it where it is written.
    let file = write(dir.path(), "nan.yaml", "link:\n  idle: .nan\n");
    let err = Config::load(&file, LoadOptions::new()).unwrap_err();
    assert!(matches!(err, Error::Parse { line: 2, .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_never_see_a_torn_or_missing_value_during_1000_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let body = |i: u64| format!(r#"{{"a": {i}, "nested": {{"b": {i}, "c": "{i}"}}}}"#);
    let file = write(dir.path(), "app.json", &body(0));
    let config = Config::load(&file, LoadOptions::new()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));

    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (config, stop, reads) = (config.clone(), stop.clone(), reads.clone());
            tokio::spawn(async move {
                let mut handle = config.handle::<u64>("nested.b");
                let mut last_generation = 0;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let a = config.get("a").and_then(|v| v.as_u64());
                    assert!(a.is_some(), "a missing during reload");
                    let snapshot = config.snapshot();
                    let (a, b) = (snapshot.int("a", -1), snapshot.int("nested.b", -2));
                    assert_eq!(a, b, "torn snapshot");
                    assert_eq!(snapshot.string("nested.c", ""), a.to_string());
                    assert!(
                        snapshot.generation() >= last_generation,
                        "generation went back"
                    );
                    last_generation = snapshot.generation();
                    assert!(handle.get().is_some(), "handle lost its value");
                    n += 1;
                    if n.is_multiple_of(64) {
                        tokio::task::yield_now().await;
                    }
                }
                reads.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();

    for i in 1..=1000 {
        std::fs::write(&file, body(i)).unwrap();
        config.reload().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.expect("reader saw a torn or missing value");
    }
    assert_eq!(config.int("a", 0), 1000);
    assert_eq!(config.generation(), 1000);
    assert!(reads.load(Ordering::Relaxed) > 0);
}
