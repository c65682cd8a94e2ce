//! Values chosen by name (`--pooling cross-layer`, `pooling="cross-layer"`, settings files):
//! the [`Choice`] trait, and [`choice!`](crate::choice!) that declares such an enum with its
//! names and, from its doc comments, the help each name gets. The command line adapts them
//! to clap, Python parses them with [`Choice::parse`]: no front end's types in the library.

use crate::error::{Error, Result};

/// An enum whose values go by names.
pub trait Choice: Copy + PartialEq + Send + Sync + 'static {
    /// Every value, in declaration order.
    const ALL: &'static [Self];
    /// The value's name.
    fn name(self) -> &'static str;
    /// What the value means (its doc comment, on one line).
    fn help(self) -> String;

    /// The value named `text`, matched exactly or, with `ignore_case`, in any case.
    fn parse(text: &str, ignore_case: bool) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| {
            let name = v.name();
            name == text || (ignore_case && name.eq_ignore_ascii_case(text))
        })
    }

    /// Every name, comma-separated, for messages.
    fn names() -> String {
        let names: Vec<&str> = Self::ALL.iter().map(|v| v.name()).collect();
        names.join(", ")
    }
}

/// The name a value goes by on the command line and in settings files.
pub fn value_name<V: Choice>(v: &V) -> String {
    v.name().to_string()
}

/// The value of `what` (a flag, keyword or variable) named `text`, in any case.
pub fn parse_named<V: Choice>(what: &str, text: &str) -> Result<V> {
    V::parse(text, true)
        .ok_or_else(|| Error::Config(format!("{what}='{text}' is not one of: {}", V::names())))
}

/// A doc comment's lines as one help line: trimmed, joined by spaces, without the final
/// full stop (as clap words a value's help).
pub fn help_line(lines: &[&str]) -> String {
    let text = lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    match text.strip_suffix('.') {
        Some(t) if !t.ends_with('.') => t.to_string(),
        _ => text,
    }
}

/// Declares an enum of named values: its variants each `Name = "name"` under their doc
/// comments, optionally `enum E: default Variant` for its `Default`. Derives `Clone`, `Copy`,
/// `Debug`, `PartialEq` and `Eq`, and implements [`Choice`], `Display` (the name), serde (the
/// name) and `Default`; the enum's own attributes (more derives) pass through.
#[macro_export]
macro_rules! choice {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident $(: default $default:ident)? {
            $(
                $(#[doc = $doc:literal])*
                $variant:ident = $text:literal
            ),+ $(,)?
        }
    ) => {
        // Copy because `Choice` takes `self`; the comparisons because callers match on them.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        $(#[$meta])*
        $vis enum $name {
            $(
                $(#[doc = $doc])*
                $variant,
            )+
        }

        impl $crate::choice::Choice for $name {
            const ALL: &'static [Self] = &[$($name::$variant),+];

            fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            fn help(self) -> String {
                match self {
                    $($name::$variant => $crate::choice::help_line(&[$($doc),*]),)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str($crate::choice::Choice::name(*self))
            }
        }

        // On disk a value is its name, so files and command lines spell it alike.
        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str($crate::choice::Choice::name(*self))
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                const NAMES: &[&str] = &[$($text),+];
                let text = <String as ::serde::Deserialize>::deserialize(d)?;
                <Self as $crate::choice::Choice>::ALL
                    .iter()
                    .copied()
                    .find(|v| $crate::choice::Choice::name(*v) == text)
                    .ok_or_else(|| ::serde::de::Error::unknown_variant(&text, NAMES))
            }
        }

        $(
            impl Default for $name {
                fn default() -> Self {
                    $name::$default
                }
            }
        )?
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::choice! {
        /// A test enum.
        enum Colour: default Red {
            /// Like blood.
            /// Or a rose.
            Red = "red",
            /// The sea... and the sky.
            DeepBlue = "deep-blue",
        }
    }

    #[test]
    fn names_help_parse_and_default() {
        assert_eq!(Colour::ALL, &[Colour::Red, Colour::DeepBlue]);
        assert_eq!(Colour::DeepBlue.to_string(), "deep-blue");
        assert_eq!(Colour::Red.help(), "Like blood. Or a rose");
        assert_eq!(Colour::DeepBlue.help(), "The sea... and the sky");
        assert_eq!(Colour::parse("deep-blue", false), Some(Colour::DeepBlue));
        assert_eq!(Colour::parse("Deep-Blue", false), None);
        assert_eq!(Colour::parse("Deep-Blue", true), Some(Colour::DeepBlue));
        assert_eq!(Colour::default(), Colour::Red);
        let e = parse_named::<Colour>("colour", "green").unwrap_err();
        assert!(
            e.to_string()
                .contains("colour='green' is not one of: red, deep-blue"),
            "{e}"
        );
    }

    #[test]
    fn serde_spells_a_value_by_its_name() {
        let json = serde_json::to_string(&[Colour::DeepBlue, Colour::Red]).unwrap();
        assert_eq!(json, r#"["deep-blue","red"]"#);
        let back: Vec<Colour> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, [Colour::DeepBlue, Colour::Red]);
        let e = serde_json::from_str::<Colour>(r#""DeepBlue""#).unwrap_err();
        assert!(
            e.to_string()
                .contains("unknown variant `DeepBlue`, expected `red` or `deep-blue`"),
            "{e}"
        );
    }
}
