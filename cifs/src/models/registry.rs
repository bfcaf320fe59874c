//! What needs every model family: a model named on the command line or in `config.json`, and the
//! family that recognises a state dict. A new family is its own file implementing
//! [`crate::models::family::Family`] and one line in `crate::models::FAMILIES` (models/mod.rs).

use crate::models::family::{ModelConfig, ModelKind, TensorShapes};
use crate::models::FAMILIES;

impl ModelKind {
    /// Every architecture of every family.
    pub fn all() -> impl Iterator<Item = ModelKind> {
        FAMILIES.iter().flat_map(|&f| f.architectures().iter().map(move |a| ModelKind::of(f, a)))
    }

    /// The architecture named `name` (`resnet18-cifs`, ...).
    pub fn named(name: &str) -> std::result::Result<ModelKind, String> {
        let name = name.trim();
        ModelKind::all().find(|k| k.name() == name).ok_or_else(|| {
            let known: Vec<&str> = ModelKind::all().map(ModelKind::name).collect();
            format!("unknown model `{name}` (one of {})", known.join(", "))
        })
    }
}

impl std::str::FromStr for ModelKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<ModelKind, String> {
        ModelKind::named(s)
    }
}

impl<'de> serde::Deserialize<'de> for ModelKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<ModelKind, D::Error> {
        ModelKind::named(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The model `dict` holds: the one family that claims it, or why none (or several) did.
pub fn recognise(dict: &TensorShapes) -> std::result::Result<ModelConfig, String> {
    let claims: Vec<_> = FAMILIES.iter().filter_map(|f| f.recognise(dict)).collect();
    match claims.len() {
        0 => Err("no model family recognises its tensors (a ResNet has `conv1.weight` and `linear.weight`, a WideResNet `block1.layer.0.conv1.weight`)".into()),
        1 => claims.into_iter().next().expect("one claim"),
        n => Err(format!("{n} model families claim its tensors")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_are_unique_and_are_the_cli_and_config_names() {
        let names: Vec<&str> = ModelKind::all().map(ModelKind::name).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        for kind in ModelKind::all() {
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{}\"", kind.name()));
            assert_eq!(serde_json::from_str::<ModelKind>(&format!("\"{kind}\"")).unwrap(), kind);
            assert_eq!(kind.name().parse::<ModelKind>(), Ok(kind));
        }
        assert!(serde_json::from_str::<ModelKind>("\"vgg16\"").unwrap_err().to_string().contains("resnet18-cifs"));
    }
}
