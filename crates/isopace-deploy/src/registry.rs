//! The registry: component types, their factories, descriptions and example configs.

use std::{borrow::Cow, collections::BTreeMap, fmt, path::Path, sync::Arc};

use isopace_host::{BoxError, Component, Env};
use serde::de::DeserializeOwned;

use crate::{
    Deprecation, Descriptor,
    error::{DescriptorError, Error, ErrorKind, json_message, unknown_type},
    migrate::Migration,
    preflight::{self, Finding, PreflightContext, Severity, Stage},
    subst::Lookup,
};

/// Decodes a descriptor's config; with an env, also builds the component.
type Make = dyn Fn(&Descriptor, Option<&Env>) -> Result<Option<Box<dyn Component>>, DescriptorError>
    + Send
    + Sync;

/// Decodes a descriptor's config and runs one preflight check on it.
type Check = dyn Fn(&Descriptor, &PreflightContext<'_>) -> Result<Vec<Finding>, DescriptorError>
    + Send
    + Sync;

struct Entry {
    description: String,
    example: serde_json::Value,
    make: Arc<Make>,
    preflight: Vec<Arc<Check>>,
}

/// What `isopace types` prints about one registered type.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeInfo {
    /// The `type` value descriptors use.
    pub name: String,
    /// One line saying what the type is for.
    pub description: String,
    /// An example `config` object that the type accepts.
    pub example: serde_json::Value,
}

impl TypeInfo {
    /// A complete example descriptor for this type, named `name`.
    pub fn example_descriptor(&self, name: &str) -> serde_json::Value {
        serde_json::json!({ "name": name, "type": self.name, "config": self.example })
    }

    /// The example descriptor as a file would hold it, named `my-<type>`: pretty JSON with
    /// `name`, `type` and `config` in that order, each line indented by `indent` spaces.
    pub fn example_file(&self, indent: usize) -> String {
        let pretty = |v: &serde_json::Value| {
            serde_json::to_string_pretty(v).expect("a JSON value serialises")
        };
        let name = serde_json::Value::from(format!("my-{}", self.name));
        // Written field by field: a JSON object's keys would come out sorted.
        let text = format!(
            "{{\n  \"name\": {},\n  \"type\": {},\n  \"config\": {}\n}}",
            pretty(&name),
            pretty(&serde_json::Value::from(self.name.clone())),
            pretty(&self.example).replace('\n', "\n  ")
        );
        let pad = " ".repeat(indent);
        text.lines().map(|l| format!("{pad}{l}\n")).collect()
    }
}

/// The name, the description and the [example file](TypeInfo::example_file), as `isopace
/// types` prints a type.
impl fmt::Display for TypeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\n    {}\n{}",
            self.name,
            self.description,
            self.example_file(4)
        )
    }
}

/// Maps descriptor types to the factories that build their components.
///
/// Build it up front, then share it (`Arc<Registry>`) with the deployer; it is immutable
/// afterwards and safe for concurrent use.
///
/// ```
/// use isopace_deploy::Registry;
/// use isopace_host::{async_trait, BoxError, Component, Env};
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct LinkConfig { host: String, port: u16 }
///
/// struct Link { name: String, config: LinkConfig }
///
/// #[async_trait]
/// impl Component for Link {
///     fn name(&self) -> &str { &self.name }
///     async fn start(&mut self, _: &Env) -> Result<(), BoxError> { Ok(()) }
///     async fn stop(&mut self, _: &Env) -> Result<(), BoxError> { Ok(()) }
/// }
///
/// let mut registry = Registry::new();
/// registry
///     .register_typed(
///         "link",
///         "a client link to a host and port",
///         serde_json::json!({ "host": "127.0.0.1", "port": 8583 }),
///         |name: &str, config: LinkConfig, _env: &Env| {
///             Ok(Link { name: name.to_owned(), config })
///         },
///     )
///     .unwrap();
/// assert_eq!(registry.types()[0].name, "link");
/// ```
#[derive(Default)]
pub struct Registry {
    types: BTreeMap<String, Entry>,
    migrations: BTreeMap<String, Vec<Arc<Migration>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Registers a factory that receives the descriptor's `config` as a JSON value.
    ///
    /// The factory gets the component's name, its config and the host's env (scoped to the
    /// component). `example` is an example config that the factory accepts.
    pub fn register<F, C>(
        &mut self,
        type_name: &str,
        description: &str,
        example: serde_json::Value,
        factory: F,
    ) -> Result<(), Error>
    where
        F: Fn(&str, serde_json::Value, &Env) -> Result<C, BoxError> + Send + Sync + 'static,
        C: Component,
    {
        // A JSON value is the most permissive typed config: it always decodes.
        self.register_typed::<serde_json::Value, _, _>(type_name, description, example, factory)
    }

    /// Registers a factory whose config is deserialized into its own serde type `T`.
    ///
    /// `#[serde(deny_unknown_fields)]`, missing fields and type mismatches in `T` are reported
    /// with the descriptor file, line:column and the field's path (`config.port`), by
    /// `isopace validate` as well as by the deployer.
    pub fn register_typed<T, F, C>(
        &mut self,
        type_name: &str,
        description: &str,
        example: serde_json::Value,
        factory: F,
    ) -> Result<(), Error>
    where
        T: DeserializeOwned + 'static,
        F: Fn(&str, T, &Env) -> Result<C, BoxError> + Send + Sync + 'static,
        C: Component,
    {
        let make = move |d: &Descriptor, env: Option<&Env>| {
            let config: T = decode(d)?;
            match env {
                None => Ok(None),
                Some(env) => factory(&d.name, config, env)
                    .map(|c| Some(Box::new(c) as Box<dyn Component>))
                    .map_err(|e| {
                        DescriptorError::new(&d.file, ErrorKind::Build)
                            .message(format!("the `{}` factory failed", d.type_name))
                            .caused_by_boxed(e)
                    }),
            }
        };
        self.insert(type_name, description, example, Arc::new(make))
    }

    fn insert(
        &mut self,
        type_name: &str,
        description: &str,
        example: serde_json::Value,
        make: Arc<Make>,
    ) -> Result<(), Error> {
        if self.types.contains_key(type_name) {
            return Err(Error::DuplicateType(type_name.to_owned()));
        }
        self.types.insert(
            type_name.to_owned(),
            Entry {
                description: description.to_owned(),
                example,
                make,
                preflight: Vec::new(),
            },
        );
        Ok(())
    }

    /// Every registered type, sorted by name.
    pub fn types(&self) -> Vec<TypeInfo> {
        self.types
            .iter()
            .map(|(name, e)| TypeInfo {
                name: name.clone(),
                description: e.description.clone(),
                example: e.example.clone(),
            })
            .collect()
    }

    /// The registered type `type_name`; when there is none, the error suggests the closest
    /// registered name.
    ///
    pub fn type_info(&self, type_name: &str) -> Result<TypeInfo, Error> {
        match self.types.get(type_name) {
            Some(e) => Ok(TypeInfo {
                name: type_name.to_owned(),
                description: e.description.clone(),
                example: e.example.clone(),
            }),
            None => Err(Error::UnknownType {
                name: type_name.to_owned(),
                known: self.types.keys().cloned().collect(),
            }),
        }
    }

    /// Whether a type is registered.
    pub fn contains(&self, type_name: &str) -> bool {
        self.types.contains_key(type_name)
    }

    /// Adds a preflight check to the registered type `type_name`: it checks a config that
    /// decodes into `T` (the type's config type) against the machine it is about to run
    /// on — a program that exists, a directory, an address that can be bound — and says
    /// what it found, each [`Finding`] naming a field inside the config.
    ///
    /// [`validate_dir_with`](crate::validate_dir_with) (`isopace validate`) runs the
    /// checks at [`Stage::Validate`] and reports every finding; [`build`](Registry::build)
    /// runs them at [`Stage::Build`], before the factory, and refuses to build on the first
    /// [error](Severity::Error), with the same message. Warnings are for what may be fine
    /// when the component really starts (a port that a running daemon holds now): a build
    /// ignores them, so a check that can only warn returns at once at [`Stage::Build`].
    /// Several checks of one type run in the order they were registered.
    ///
    /// Fails when no type `type_name` is registered.
    ///
    /// ```
    /// use isopace_deploy::{Descriptor, Finding, PreflightContext, Registry, Stage};
    /// use isopace_host::{async_trait, BoxError, Component, Env};
    ///
    /// #[derive(serde::Deserialize)]
    /// struct ToolConfig { path: std::path::PathBuf }
    ///
    /// struct Tool { name: String }
    ///
    /// #[async_trait]
    /// impl Component for Tool {
    ///     fn name(&self) -> &str { &self.name }
    ///     async fn start(&mut self, _: &Env) -> Result<(), BoxError> { Ok(()) }
    ///     async fn stop(&mut self, _: &Env) -> Result<(), BoxError> { Ok(()) }
    /// }
    ///
    /// let mut registry = Registry::new();
    /// registry.register_typed(
    ///     "tool",
    ///     "runs a tool",
    ///     serde_json::json!({ "path": "/usr/bin/env" }),
    ///     |name: &str, _: ToolConfig, _: &Env| Ok(Tool { name: name.to_owned() }),
    /// )?;
    /// registry.register_preflight("tool", |config: &ToolConfig, _: &PreflightContext<'_>| {
    ///     match config.path.exists() {
    ///         true => vec![],
    ///         false => vec![Finding::error("path", format!("{} does not exist", config.path.display()))],
    ///     }
    /// })?;
    ///
    /// let text = "{\"name\": \"t\", \"type\": \"tool\",\n \"config\": {\"path\": \"/no/such/tool\"}}";
    /// let d = Descriptor::parse(text, "t.json")?;
    /// // The shape is right...
    /// registry.check(&d)?;
    /// // ...but the tool is missing.
    /// let found = registry.preflight(&d, Stage::Validate)?;
    /// assert_eq!(
    ///     found[0].to_string(),
    ///     "t.json:2:21: field `config.path`: /no/such/tool does not exist"
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn register_preflight<T, F>(&mut self, type_name: &str, check: F) -> Result<(), Error>
    where
        T: DeserializeOwned + 'static,
        F: Fn(&T, &PreflightContext<'_>) -> Vec<Finding> + Send + Sync + 'static,
    {
        let Some(entry) = self.types.get_mut(type_name) else {
            return Err(Error::UnknownType {
                name: type_name.to_owned(),
                known: self.types.keys().cloned().collect(),
            });
        };
        let check = move |d: &Descriptor, context: &PreflightContext<'_>| {
            let config: T = decode(d)?;
            Ok(check(&config, context))
        };
        entry.preflight.push(Arc::new(check));
        Ok(())
    }

    /// Runs the [preflight checks](Registry::register_preflight) of the descriptor's type at
    /// `stage` and returns what they found, in the order they found it: each an error of
    /// kind [`ErrorKind::Preflight`] with its severity, naming the file, the line:column
    /// where the file writes the field, and the field (`config.command`). The type's
    /// migrations apply first, unless they ran on it already.
    ///
    /// Fails as [`check`](Registry::check) does when the type is unknown or the config does
    /// not decode.
    pub fn preflight(
        &self,
        descriptor: &Descriptor,
        stage: Stage,
    ) -> Result<Vec<DescriptorError>, DescriptorError> {
        let entry = self.entry(descriptor)?;
        let descriptor = self.migrated(descriptor)?;
        self.run_preflight(entry, &descriptor, stage)
            .map(|found| {
                found
                    .into_iter()
                    .map(|e| descriptor.redact_error(e))
                    .collect()
            })
            .map_err(|e| descriptor.redact_error(e))
    }

    fn run_preflight(
        &self,
        entry: &Entry,
        descriptor: &Descriptor,
        stage: Stage,
    ) -> Result<Vec<DescriptorError>, DescriptorError> {
        let context = PreflightContext {
            name: &descriptor.name,
            file: &descriptor.file,
            stage,
        };
        let mut found = Vec::new();
        for check in &entry.preflight {
            for finding in check(descriptor, &context)? {
                if stage == Stage::Build && finding.severity() == Severity::Warning {
                    continue;
                }
                found.push(
                    DescriptorError::new(
                        &descriptor.file,
                        ErrorKind::Preflight(finding.severity()),
                    )
                    .at_maybe(preflight::field_at(descriptor, finding.field()))
                    .field(format!("config.{}", finding.field()))
                    .message(finding.message()),
                );
            }
        }
        Ok(found)
    }

    /// Registers a migration for descriptors of `type_name`: it moves fields the type
    /// deprecated to what replaced them, and returns a [`Deprecation`] for each one it found.
    ///
    /// Migrations let a type change its config without breaking the descriptor files already
    /// written for it. They run on a descriptor once, before it is checked or built: the
    /// deployer and [`validate_dir`](crate::validate_dir) run them on every file they parse,
    /// so what they check, build and supervise is the migrated descriptor, and each
    /// deprecation is logged once per file content. Several migrations of one type run in
    /// the order they were registered. A migration sees descriptors it already migrated only
    /// when their config was replaced since, so it must leave a migrated descriptor as it is
    /// (moving fields out of the config does). Its errors reject the descriptor like a
    /// config error.
    ///
    /// [`Descriptor::decode_config`] reads the deprecated fields with errors that point into
    /// the file, [`Descriptor::take_config`] removes them, and
    /// [`Descriptor::migrate_restart`] moves a value to the descriptor's `restart` unless the
    /// descriptor sets that field itself.
    ///
    /// ```
    /// use isopace_deploy::{Descriptor, Registry, RestartField};
    ///
    /// let mut registry = Registry::new();
    /// registry.register_migration("job", |d: &mut Descriptor| {
    ///     let mut deprecations = Vec::new();
    ///     if let Some(retries) = d.take_config("retries").and_then(|v| v.as_u64()) {
    ///         deprecations.push(d.migrate_restart("config.retries", RestartField::MaxRestarts, |r| {
    ///             r.max_restarts = retries as u32
    ///         }));
    ///     }
    ///     Ok(deprecations)
    /// });
    /// let mut d = Descriptor::parse(
    ///     r#"{"name": "nightly", "type": "job", "config": {"retries": 2}}"#,
    ///     "nightly.json",
    /// )?;
    /// let deprecations = registry.migrate(&mut d)?;
    /// assert_eq!(
    ///     deprecations[0].to_string(),
    ///     "nightly.json: `config.retries` is deprecated; use `restart.max_restarts`"
    /// );
    /// assert_eq!(d.restart.max_restarts, 2);
    /// assert_eq!(d.config, serde_json::json!({}));
    /// // Once is enough.
    /// assert!(registry.migrate(&mut d)?.is_empty());
    /// # Ok::<(), isopace_deploy::DescriptorError>(())
    /// ```
    pub fn register_migration<F>(&mut self, type_name: &str, migration: F)
    where
        F: Fn(&mut Descriptor) -> Result<Vec<Deprecation>, DescriptorError> + Send + Sync + 'static,
    {
        self.migrations
            .entry(type_name.to_owned())
            .or_default()
            .push(Arc::new(migration));
    }

    /// Runs the migrations registered for the descriptor's type, unless they already ran on
    /// it, logs each [`Deprecation`] they report as a warning, and returns them.
    ///
    /// Fails when a migration rejects a deprecated value, or when the restart policy it
    /// leaves has a `max_backoff` shorter than its `backoff`.
    pub fn migrate(
        &self,
        descriptor: &mut Descriptor,
    ) -> Result<Vec<Deprecation>, DescriptorError> {
        let deprecations = self.migrate_quietly(descriptor)?;
        for deprecation in &deprecations {
            tracing::warn!(component = descriptor.name.as_str(), "{deprecation}");
        }
        Ok(deprecations)
    }

    /// [`migrate`](Self::migrate) without the log lines, for a caller that reports the
    /// deprecations itself.
    fn migrate_quietly(
        &self,
        descriptor: &mut Descriptor,
    ) -> Result<Vec<Deprecation>, DescriptorError> {
        if descriptor.migrated {
            return Ok(Vec::new());
        }
        let mut deprecations = Vec::new();
        for migration in self
            .migrations
            .get(&descriptor.type_name)
            .into_iter()
            .flatten()
        {
            deprecations.extend(migration(descriptor)?);
        }
        let restart = &descriptor.restart;
        if !deprecations.is_empty() && restart.max_backoff < restart.backoff {
            let format = isopace_config::format_duration;
            return Err(DescriptorError::new(&descriptor.file, ErrorKind::Field)
                .field("restart.max_backoff")
                .message(format!(
                    "{} is shorter than `restart.backoff` ({}) once deprecated fields are moved \
                     to `restart`",
                    format(restart.max_backoff),
                    format(restart.backoff)
                )));
        }
        descriptor.migrated = true;
        Ok(deprecations)
    }

    /// Parses a descriptor file's bytes and migrates the descriptor: what the deployer and
    /// `validate_dir` do with every file.
    pub(crate) fn parse(
        &self,
        file: &Path,
        bytes: &[u8],
        env: &dyn Lookup,
    ) -> Result<Descriptor, DescriptorError> {
        let mut descriptor = Descriptor::from_bytes(file, bytes, env)?;
        self.migrate(&mut descriptor)?;
        Ok(descriptor)
    }

    /// [`parse`](Self::parse) for a validation: each deprecation is returned as a warning of
    /// kind [`ErrorKind::Deprecated`] that names the field and where the file writes it,
    /// instead of a log line.
    pub(crate) fn parse_for_validation(
        &self,
        file: &Path,
        bytes: &[u8],
        env: &dyn Lookup,
    ) -> Result<(Descriptor, Vec<DescriptorError>), DescriptorError> {
        let mut descriptor = Descriptor::from_bytes(file, bytes, env)?;
        let original = self
            .migrations
            .contains_key(&descriptor.type_name)
            .then(|| descriptor.clone());
        let deprecations = self.migrate_quietly(&mut descriptor)?;
        let warnings = deprecations
            .into_iter()
            .map(|d| {
                let at = original.as_ref().and_then(|original| {
                    let inside = d.field.strip_prefix("config.")?;
                    preflight::field_at(original, inside)
                });
                let mut message = format!("deprecated; use `{}`", d.replacement);
                if d.overridden {
                    message.push_str(" (ignored here: the descriptor sets it itself)");
                }
                DescriptorError::new(file, ErrorKind::Deprecated)
                    .at_maybe(at)
                    .field(d.field)
                    .message(message)
            })
            .collect();
        Ok((descriptor, warnings))
    }

    /// The descriptor with its type's migrations applied: itself when they have run or
    /// there are none, a migrated copy otherwise.
    fn migrated<'d>(
        &self,
        descriptor: &'d Descriptor,
    ) -> Result<Cow<'d, Descriptor>, DescriptorError> {
        if descriptor.migrated || !self.migrations.contains_key(&descriptor.type_name) {
            return Ok(Cow::Borrowed(descriptor));
        }
        let mut copy = descriptor.clone();
        self.migrate(&mut copy)?;
        Ok(Cow::Owned(copy))
    }

    /// Checks that the descriptor's type exists and its config decodes, building nothing.
    /// The type's [migrations](Registry::register_migration) apply first, unless they ran
    /// on it already.
    pub fn check(&self, descriptor: &Descriptor) -> Result<(), DescriptorError> {
        let entry = self.entry(descriptor)?;
        let descriptor = self.migrated(descriptor)?;
        (entry.make)(&descriptor, None)
            .map(drop)
            .map_err(|e| descriptor.redact_error(e))
    }

    /// Builds the component a descriptor describes. The component must carry the
    /// descriptor's name. The type's [migrations](Registry::register_migration) apply
    /// first, unless they ran on it already (a restart policy they change is the caller's
    /// to apply: [`migrate`](Registry::migrate) the descriptor before building it). Then
    /// its [preflight checks](Registry::register_preflight) run: the first error they find
    /// is the build's, and the factory is not called.
    pub fn build(
        &self,
        descriptor: &Descriptor,
        env: &Env,
    ) -> Result<Box<dyn Component>, DescriptorError> {
        let entry = self.entry(descriptor)?;
        let descriptor = self.migrated(descriptor)?;
        if let Some(error) = self
            .run_preflight(entry, &descriptor, Stage::Build)
            .map_err(|e| descriptor.redact_error(e))?
            .into_iter()
            .next()
        {
            return Err(descriptor.redact_error(error));
        }
        let env = env.for_component(&descriptor.name);
        let component = (entry.make)(&descriptor, Some(&env))
            .map_err(|e| descriptor.redact_error(e))?
            .expect("a factory given an env builds a component");
        if component.name() != descriptor.name {
            return Err(
                DescriptorError::new(&descriptor.file, ErrorKind::Build).message(format!(
                    "the `{}` factory built a component named `{}`, expected `{}`",
                    descriptor.type_name,
                    component.name(),
                    descriptor.name
                )),
            );
        }
        Ok(component)
    }

    fn entry(&self, descriptor: &Descriptor) -> Result<&Entry, DescriptorError> {
        self.types.get(&descriptor.type_name).ok_or_else(|| {
            let known: Vec<&str> = self.types.keys().map(String::as_str).collect();
            DescriptorError::new(
                &descriptor.file,
                ErrorKind::UnknownType(descriptor.type_name.clone()),
            )
            .at_maybe(descriptor.type_at())
            .field("type")
            .message(unknown_type(&descriptor.type_name, &known))
        })
    }
}

impl Descriptor {
    /// Deserializes the config into `T`, as [`Registry::register_typed`] does: an error names
    /// the path of the offending field (`config.backoff.initial`) and, for a descriptor parsed
    /// from a file whose config is unchanged, its line:column there. Migrations use it to
    /// read deprecated fields.
    ///
    /// ```
    /// use isopace_deploy::Descriptor;
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Legacy { retries: Option<u32> }
    ///
    /// let d = Descriptor::parse(
    ///     "{\"name\": \"a\", \"type\": \"job\",\n \"config\": {\"retries\": -1}}",
    ///     "a.json",
    /// )?;
    /// let err = d.decode_config::<Legacy>().err().unwrap();
    /// assert_eq!(err.field_path(), Some("config.retries"));
    /// assert_eq!(err.position().map(|at| at.line), Some(2));
    /// # Ok::<(), isopace_deploy::DescriptorError>(())
    /// ```
    pub fn decode_config<T: DeserializeOwned>(&self) -> Result<T, DescriptorError> {
        decode(self)
    }
}

/// Deserializes the descriptor's config into `T`; an error names the path of the offending
/// field and, for a descriptor parsed from a file, its line:column there.
fn decode<T: DeserializeOwned>(d: &Descriptor) -> Result<T, DescriptorError> {
    // A file's config is checked to be an object when it is parsed; one set in code is
    // checked here, by the same rule.
    if !d.config.is_object() {
        return Err(DescriptorError::new(&d.file, ErrorKind::Field)
            .field("config")
            .message("must be a JSON object"));
    }
    // The value is what counts (it may have been set in code); the file's text only places
    // an error, so it is decoded again, from the text, once decoding failed.
    let error = match serde_path_to_error::deserialize::<_, T>(&d.config) {
        Ok(config) => return Ok(config),
        Err(error) => error,
    };
    let (error, at) = match d.config_in_file() {
        Some((text, config_at)) => {
            let mut de = serde_json::Deserializer::from_str(text);
            match serde_path_to_error::deserialize::<_, T>(&mut de) {
                Err(in_text) => (in_text, Some(config_at)),
                // serde_json decodes a value and its text alike; should they ever differ,
                // the value's error stands, without a position.
                Ok(_) => (error, None),
            }
        }
        None => (error, None),
    };
    let path = error.path().to_string();
    let inner = error.into_inner();
    let field = if path == "." || path.is_empty() {
        "config".to_owned()
    } else {
        format!("config.{path}")
    };
    let at = at.map(|config_at| {
        if inner.line() > 0 {
            config_at.offset_by(inner.line(), inner.column())
        } else {
            config_at
        }
    });
    Err(DescriptorError::new(&d.file, ErrorKind::Field)
        .at_maybe(at)
        .field(field)
        .message(json_message(&inner)))
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("types", &self.types.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use isopace_host::{Host, async_trait};
    use serde::Deserialize;
    use serde_json::json;

    use super::*;
    use crate::{Finding, PreflightContext, Severity, Stage};

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct LinkConfig {
        port: u16,
    }

    struct Link {
        name: String,
        /// Fails right after each start.
        flaky: bool,
    }

    #[async_trait]
    impl Component for Link {
        fn name(&self) -> &str {
            &self.name
        }
        async fn start(&mut self, env: &Env) -> Result<(), BoxError> {
            if self.flaky {
                env.spawn_fallible(async { Err::<(), _>("the link dropped") });
            }
            Ok(())
        }
        async fn stop(&mut self, _: &Env) -> Result<(), BoxError> {
            Ok(())
        }
    }

    fn registry() -> Registry {
        let mut registry = Registry::new();
        registry
            .register_typed(
                "link",
                "a link",
                json!({ "port": 1 }),
                |name: &str, config: LinkConfig, _: &Env| {
                    if config.port == 0 {
                        return Err("port 0".into());
                    }
                    Ok(Link {
                        name: name.to_owned(),
                        flaky: config.port == 13,
                    })
                },
            )
            .unwrap();
        registry
    }

    #[test]
    fn a_descriptor_built_in_code_is_checked_by_field_path() {
        let registry = registry();
        let d = Descriptor::new("a", "link").config(json!({ "port": "http" }));
        let err = registry.check(&d).unwrap_err();
        assert_eq!(err.position(), None);
        assert_eq!(
            err.to_string(),
            "field `config.port`: invalid type: string \"http\", expected u16"
        );
        let err = registry.check(&d.file("a.json")).unwrap_err();
        assert!(
            err.to_string().starts_with("a.json: field `config.port`"),
            "{err}"
        );

        let err = registry.check(&Descriptor::new("a", "nope")).unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::UnknownType("nope".into()));
        assert_eq!(
            err.to_string(),
            "field `type`: unknown component type `nope` (registered: link)"
        );
        let err = registry
            .check(&Descriptor::new("a", "link").config(json!([7])))
            .unwrap_err();
        assert_eq!(err.to_string(), "field `config`: must be a JSON object");
        registry
            .check(&Descriptor::new("a", "link").config(json!({ "port": 7 })))
            .unwrap();
    }

    #[test]
    fn typos_in_types_and_fields_get_the_closest_name() {
        let registry = registry();
        let err = registry.check(&Descriptor::new("a", "lnik")).unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::UnknownType("lnik".into()));
        assert_eq!(
            err.to_string(),
            "field `type`: unknown component type `lnik`; did you mean `link`?"
        );
        let err = registry.type_info("lnk").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown component type `lnk`; did you mean `link`?"
        );
        let err = registry.type_info("http").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown component type `http` (registered: link)"
        );
        assert_eq!(
            Registry::new().type_info("link").unwrap_err().to_string(),
            "unknown component type `link` (none is registered)"
        );
        assert_eq!(registry.type_info("link").unwrap(), registry.types()[0]);

        let text = "{\"name\": \"a\", \"type\": \"link\",\n \"config\": {\"prot\": 7}}";
        let err = registry
            .check(&Descriptor::parse(text, "a.json").unwrap())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "a.json:2:18: field `config.prot`: unknown field `prot`, expected `port`; \
             did you mean `port`?"
        );
        let text = r#"{"name": "a", "tpye": "link"}"#;
        let err = Descriptor::parse(text, "a.json").unwrap_err();
        assert!(err.to_string().ends_with("; did you mean `type`?"), "{err}");
    }

    #[test]
    fn an_example_file_is_pretty_and_in_descriptor_order() {
        let info = TypeInfo {
            name: "link".into(),
            description: "a link".into(),
            example: json!({ "port": 1, "hosts": ["a", "b"] }),
        };
        let expected = "  {
    \"name\": \"my-link\",
    \"type\": \"link\",
    \"config\": {
      \"hosts\": [
        \"a\",
        \"b\"
      ],
      \"port\": 1
    }
  }
";
        assert_eq!(info.example_file(2), expected);
        let parsed: serde_json::Value = serde_json::from_str(&info.example_file(0)).unwrap();
        assert_eq!(parsed, info.example_descriptor("my-link"));
        assert!(
            info.to_string()
                .starts_with("link\n    a link\n    {\n      \"name\"")
        );
    }

    #[test]
    fn a_config_replaced_after_parsing_is_what_is_checked() {
        let registry = registry();
        let text = "{\"name\": \"a\", \"type\": \"link\",\n \"config\": {\"port\": 7}}";
        let mut d = Descriptor::parse(text, "a.json").unwrap();
        registry.check(&d).unwrap();
        // Set through the public field: the file's text no longer describes the config, so
        // the error has no position rather than a wrong one.
        d.config = json!({ "port": -1 });
        let err = registry.check(&d).unwrap_err();
        assert_eq!(err.position(), None);
        assert_eq!(err.field_path(), Some("config.port"));
        // Through the builder method, the same.
        let d = Descriptor::parse(text, "a.json")
            .unwrap()
            .config(json!({ "port": "x" }));
        assert_eq!(registry.check(&d).unwrap_err().position(), None);
        // Parsed and unchanged, the error points into the file.
        let text = "{\"name\": \"a\", \"type\": \"link\",\n \"config\": {\"port\": -1}}";
        let err = registry
            .check(&Descriptor::parse(text, "a.json").unwrap())
            .unwrap_err();
        assert_eq!(
            err.position(),
            Some(crate::Position {
                line: 2,
                column: 22
            })
        );
    }

    #[tokio::test]
    async fn build_keeps_the_factorys_error_as_the_source() {
        let registry = registry();
        let host = Host::builder().build();
        let d = Descriptor::new("a", "link").config(json!({ "port": 0 }));
        let err = registry.build(&d, host.env()).err().unwrap();
        assert_eq!(err.kind(), &ErrorKind::Build);
        assert_eq!(err.to_string(), "the `link` factory failed");
        let source = std::error::Error::source(&err).expect("the factory's error");
        assert_eq!(source.to_string(), "port 0");
        assert_eq!(err.detail(), "the `link` factory failed: port 0");

        let d = d.config(json!({ "port": 9 }));
        let component = registry.build(&d, host.env()).unwrap();
        assert_eq!(component.name(), "a");
    }

    /// The registry whose `link` has a preflight check: port 7 is "missing" (an error),
    /// port 8 "busy" (a warning).
    fn checked() -> Registry {
        let mut registry = registry();
        registry
            .register_preflight(
                "link",
                |config: &LinkConfig, context: &PreflightContext<'_>| match config.port {
                    7 => vec![Finding::error(
                        "port",
                        format!("{} has no port 7", context.name()),
                    )],
                    8 => vec![Finding::warning("port", "port 8 is busy")],
                    _ => vec![],
                },
            )
            .unwrap();
        registry
    }

    #[tokio::test]
    async fn a_preflight_error_rejects_the_build_with_the_message_validate_reports() {
        let mut registry = checked();
        let text = "{\"name\": \"a\", \"type\": \"link\",\n \"config\": {\"port\": 7}}";
        let d = Descriptor::parse(text, "a.json").unwrap();
        registry.check(&d).unwrap();
        let found = registry.preflight(&d, Stage::Validate).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind(), &ErrorKind::Preflight(Severity::Error));
        assert_eq!(
            found[0].to_string(),
            "a.json:2:21: field `config.port`: a has no port 7"
        );
        let host = Host::builder().build();
        let err = registry.build(&d, host.env()).err().unwrap();
        assert_eq!(err, found[0]);

        // A warning is reported when validating, and a build does not see it.
        let d = d.config(json!({ "port": 8 }));
        let found = registry.preflight(&d, Stage::Validate).unwrap();
        assert_eq!(found[0].kind(), &ErrorKind::Preflight(Severity::Warning));
        // Its config set in code: no position rather than a wrong one.
        assert_eq!(
            found[0].to_string(),
            "a.json: field `config.port`: port 8 is busy"
        );
        assert!(registry.preflight(&d, Stage::Build).unwrap().is_empty());
        registry.build(&d, host.env()).unwrap();

        // A config that does not decode fails as `check` does.
        let d = d.config(json!({ "port": "x" }));
        assert_eq!(
            registry.preflight(&d, Stage::Validate).unwrap_err(),
            registry.check(&d).unwrap_err()
        );
        // A type without checks finds nothing; an unregistered one cannot have any.
        let d = d.config(json!({ "port": 7 }));
        assert!(
            self::registry()
                .preflight(&d, Stage::Validate)
                .unwrap()
                .is_empty()
        );
        let err = registry
            .register_preflight("lnik", |_: &LinkConfig, _: &PreflightContext<'_>| vec![])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown component type `lnik`; did you mean `link`?"
        );
    }

    #[test]
    fn a_preflight_message_never_shows_a_substituted_secret() {
        let mut registry = Registry::new();
        registry
            .register(
                "vault",
                "a vault",
                json!({}),
                |name: &str, _: serde_json::Value, _: &Env| {
                    Ok(Link {
                        name: name.to_owned(),
                        flaky: false,
                    })
                },
            )
            .unwrap();
        registry
            .register_preflight(
                "vault",
                |config: &serde_json::Value, _: &PreflightContext<'_>| {
                    vec![Finding::error(
                        "dsn",
                        format!("cannot reach {}", config["dsn"]),
                    )]
                },
            )
            .unwrap();
        let text = r#"{"name": "v", "type": "vault", "config": {"dsn": "${DSN}"}}"#;
        let env = |name: &str| (name == "DSN").then(|| "pg://admin:hunter22@db".to_owned());
        let d = Descriptor::parse_with_env(text, "v.json", &env).unwrap();
        let found = registry.preflight(&d, Stage::Validate).unwrap();
        assert!(!found[0].to_string().contains("hunter22"), "{}", found[0]);
        assert!(
            found[0].to_string().ends_with("cannot reach \"${DSN}\""),
            "{}",
            found[0]
        );
    }

    #[test]
    fn validate_dir_reports_preflight_errors_and_warnings_apart_unless_told_not_to() {
        let dir = tempfile::tempdir().unwrap();
        for (file, port) in [("a.json", 7), ("b.json", 8), ("c.json", 9)] {
            let text =
                format!(r#"{{"name": "{file}", "type": "link", "config": {{"port": {port}}}}}"#);
            std::fs::write(dir.path().join(file), text).unwrap();
        }
        let registry = checked();
        let no_env = |_: &str| None;
        let found = crate::validate_dir_with(
            dir.path(),
            &registry,
            &no_env,
            &crate::ValidateOptions::new(),
        )
        .unwrap();
        assert!(!found.is_valid());
        let said = |errors: &[DescriptorError]| -> Vec<String> {
            errors
                .iter()
                .map(|e| format!("{:?} {}", e.field_path(), e.detail()))
                .collect()
        };
        assert_eq!(
            said(&found.problems),
            ["Some(\"config.port\") a.json has no port 7"]
        );
        assert_eq!(
            said(&found.warnings),
            ["Some(\"config.port\") port 8 is busy"]
        );
        assert!(found.problems[0].file().ends_with("a.json"));
        assert_eq!(
            crate::validate_dir(dir.path(), &registry, &no_env).unwrap(),
            found.problems
        );

        let options = crate::ValidateOptions::new().preflight(false);
        let found = crate::validate_dir_with(dir.path(), &registry, &no_env, &options).unwrap();
        assert_eq!(found, crate::Validation::default());
        assert!(found.is_valid());
    }

    /// The registry with a migration of `link`: its deprecated `retries` and `wait` became
    /// `restart.max_restarts` and `restart.backoff`.
    fn migrating() -> Registry {
        #[derive(Deserialize)]
        struct Legacy {
            retries: Option<u32>,
            #[serde(default, with = "isopace_config::serde_duration::option")]
            wait: Option<std::time::Duration>,
        }
        let mut registry = registry();
        registry.register_migration("link", |d: &mut Descriptor| {
            let legacy: Legacy = d.decode_config()?;
            d.take_config("retries");
            d.take_config("wait");
            let mut deprecations = Vec::new();
            if let Some(n) = legacy.retries {
                deprecations.push(d.migrate_restart(
                    "config.retries",
                    crate::RestartField::MaxRestarts,
                    |r| r.max_restarts = n,
                ));
            }
            if let Some(wait) = legacy.wait {
                deprecations.push(d.migrate_restart(
                    "config.wait",
                    crate::RestartField::Backoff,
                    |r| r.backoff = wait,
                ));
            }
            Ok(deprecations)
        });
        registry
    }

    fn ms(n: u64) -> std::time::Duration {
        std::time::Duration::from_millis(n)
    }

    #[test]
    fn a_migration_moves_deprecated_fields_unless_the_descriptor_sets_the_replacement() {
        let registry = migrating();
        let text = r#"{"name": "a", "type": "link", "restart": {"backoff": "1s"},
                       "config": {"port": 7, "retries": 2, "wait": "10ms"}}"#;
        let mut d = Descriptor::parse(text, "a.json").unwrap();
        // Unmigrated, check and build migrate a copy first; without the migration the
        // deprecated fields are unknown.
        registry.check(&d).unwrap();
        let err = self::registry().check(&d).unwrap_err();
        assert!(err.to_string().contains("unknown field `retries`"), "{err}");

        let deprecations = registry.migrate(&mut d).unwrap();
        let said: Vec<String> = deprecations.iter().map(ToString::to_string).collect();
        assert_eq!(
            said,
            [
                "a.json: `config.retries` is deprecated; use `restart.max_restarts`",
                "a.json: `config.wait` is deprecated; use `restart.backoff` \
                 (ignored here: the descriptor sets `restart.backoff` itself)",
            ]
        );
        assert_eq!(
            d.restart,
            isopace_host::RestartPolicy::on_failure()
                .max_restarts(2)
                .backoff(ms(1000))
        );
        assert_eq!(d.config, json!({ "port": 7 }));
        assert!(d.sets_restart(crate::RestartField::MaxRestarts));
        // Once migrated, a descriptor is left alone.
        assert!(registry.migrate(&mut d).unwrap().is_empty());
        registry.check(&d).unwrap();

        // In code, a restart policy given whole wins over every deprecated field.
        let mut d = Descriptor::new("a", "link")
            .restart(isopace_host::RestartPolicy::never())
            .config(json!({ "port": 7, "retries": 9 }));
        let deprecations = registry.migrate(&mut d).unwrap();
        assert!(deprecations[0].overridden);
        assert_eq!(d.restart, isopace_host::RestartPolicy::never());
        // A type without migrations is not touched.
        let mut other = Descriptor::new("a", "nope").config(json!({ "retries": 1 }));
        assert!(registry.migrate(&mut other).unwrap().is_empty());
        assert_eq!(other.config, json!({ "retries": 1 }));
    }

    #[test]
    fn a_bad_deprecated_value_is_reported_like_a_config_error() {
        let registry = migrating();
        let text = "{\"name\": \"a\", \"type\": \"link\",\n \"config\": {\"port\": 7, \"retries\": \"many\"}}";
        let err = registry
            .migrate(&mut Descriptor::parse(text, "a.json").unwrap())
            .unwrap_err();
        assert_eq!(err.field_path(), Some("config.retries"));
        assert_eq!(err.position().map(|at| at.line), Some(2));
        let d = Descriptor::parse(text, "a.json").unwrap();
        assert_eq!(registry.check(&d).unwrap_err(), err);

        // A moved backoff longer than the descriptor's own max_backoff.
        let text = r#"{"name": "a", "type": "link", "restart": {"max_backoff": "1s"},
                       "config": {"port": 7, "wait": "2s"}}"#;
        let err = registry
            .migrate(&mut Descriptor::parse(text, "a.json").unwrap())
            .unwrap_err();
        assert_eq!(err.field_path(), Some("restart.max_backoff"));
        assert!(err.to_string().contains("`restart.backoff` (2s)"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_deployer_and_validate_dir_see_the_migrated_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        // Port 13 fails after every start; the deprecated `retries` allows one restart,
        // where the descriptor's default would allow five.
        std::fs::write(
            dir.path().join("a.json"),
            r#"{"name": "a", "type": "link", "config": {"port": 13, "retries": 1, "wait": "10ms"}}"#,
        )
        .unwrap();
        let registry = Arc::new(migrating());
        let problems = crate::validate_dir(dir.path(), &registry, &|_: &str| None).unwrap();
        assert!(problems.is_empty(), "{problems:?}");

        let host = Host::builder().restart_jitter(0.0).build();
        host.start().await.unwrap();
        let deployer = crate::Deployer::builder(&host, Arc::clone(&registry), dir.path())
            .watch(false)
            .build();
        let report = deployer.scan().await.unwrap();
        assert_eq!(report.deployed, ["a"]);
        let mut status = host.status_of("a").unwrap();
        for _ in 0..1000 {
            if status.state == isopace_host::State::Failed {
                break;
            }
            tokio::time::sleep(ms(10)).await;
            status = host.status_of("a").unwrap();
        }
        assert_eq!(status.state, isopace_host::State::Failed, "{status:?}");
        assert_eq!(status.restarts, 1);
        assert!(
            status.last_error.unwrap().contains("the link dropped"),
            "the failure is the component's own"
        );
        host.stop().await.unwrap();
    }
}
