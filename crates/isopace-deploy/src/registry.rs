//! The registry: component types, their factories, descriptions and example configs.

use std::{collections::BTreeMap, fmt, sync::Arc};

use isopace_host::{BoxError, Component, Env};
use serde::de::DeserializeOwned;

use crate::{
    Descriptor,
    error::{DescriptorError, Error, ErrorKind, json_message},
};

/// Decodes a descriptor's config; with an env, also builds the component.
type Make = dyn Fn(&Descriptor, Option<&Env>) -> Result<Option<Box<dyn Component>>, DescriptorError>
    + Send
    + Sync;

struct Entry {
    description: String,
    example: serde_json::Value,
    make: Arc<Make>,
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
                    .map_err(|e| build_error(d, &*e)),
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

    /// Whether a type is registered.
    pub fn contains(&self, type_name: &str) -> bool {
        self.types.contains_key(type_name)
    }

    /// Checks that the descriptor's type exists and its config decodes, building nothing.
    pub fn check(&self, descriptor: &Descriptor) -> Result<(), DescriptorError> {
        (self.entry(descriptor)?.make)(descriptor, None).map(drop)
    }

    /// Builds the component a descriptor describes. The component must carry the
    /// descriptor's name.
    pub fn build(
        &self,
        descriptor: &Descriptor,
        env: &Env,
    ) -> Result<Box<dyn Component>, DescriptorError> {
        let env = env.for_component(&descriptor.name);
        let component = (self.entry(descriptor)?.make)(descriptor, Some(&env))?
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
            .at(descriptor.type_at)
            .field("type")
            .message(format!(
                "unknown component type `{}` (registered: {})",
                descriptor.type_name,
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ))
        })
    }
}

/// Deserializes the descriptor's config text into `T`, keeping the file position and the
/// path of the offending field.
fn decode<T: DeserializeOwned>(d: &Descriptor) -> Result<T, DescriptorError> {
    let mut de = serde_json::Deserializer::from_str(&d.config_text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let field = if path == "." || path.is_empty() {
            "config".to_owned()
        } else {
            format!("config.{path}")
        };
        let at = if inner.line() > 0 {
            d.config_at.offset_by(inner.line(), inner.column())
        } else {
            d.config_at
        };
        DescriptorError::new(&d.file, ErrorKind::Field)
            .at(at)
            .field(field)
            .message(json_message(&inner))
    })
}

fn build_error(d: &Descriptor, error: &(dyn std::error::Error + 'static)) -> DescriptorError {
    let mut message = format!("the `{}` factory failed: {error}", d.type_name);
    let mut source = error.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    DescriptorError::new(&d.file, ErrorKind::Build).message(message)
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("types", &self.types.keys().collect::<Vec<_>>())
            .finish()
    }
}
