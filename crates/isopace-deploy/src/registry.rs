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
            .at_maybe(descriptor.type_at())
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

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct LinkConfig {
        port: u16,
    }

    struct Link {
        name: String,
    }

    #[async_trait]
    impl Component for Link {
        fn name(&self) -> &str {
            &self.name
        }
        async fn start(&mut self, _: &Env) -> Result<(), BoxError> {
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
}
