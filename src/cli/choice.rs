//! The library's named values ([`Choice`]) as clap arguments: their names and help as the
//! possible values, parsed and refused as clap's own value enums are.

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use crosspool::choice::Choice;
use std::marker::PhantomData;

/// Parses the names of `T`.
#[derive(Clone)]
pub struct ChoiceParser<T>(PhantomData<T>);

/// The parser of `T`'s names: `#[arg(long, value_parser = choice::<T>())]`.
pub fn choice<T: Choice>() -> ChoiceParser<T> {
    ChoiceParser(PhantomData)
}

impl<T: Choice> ChoiceParser<T> {
    fn values() -> impl Iterator<Item = PossibleValue> {
        T::ALL
            .iter()
            .map(|v| PossibleValue::new(v.name()).help(v.help()))
    }
}

impl<T: Choice> TypedValueParser for ChoiceParser<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        // clap's own parser words the error (the value, the flag, the possible values).
        let name = PossibleValuesParser::new(Self::values()).parse_ref(cmd, arg, value)?;
        Ok(T::parse(&name, false).expect("a possible value names a value"))
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(Self::values()))
    }
}
