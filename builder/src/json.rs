//! How column values become JSON beyond Arrow's defaults: instants as RFC 3339 with their
//! offset (`Z` for UTC), big integers and decimals as strings when asked, and a count of the
//! floats JSON cannot hold (NaN and infinities, written as `null`).

use arrow_array::cast::AsArray;
use arrow_array::timezone::Tz;
use arrow_array::types::{
    ArrowTimestampType, Float16Type, Float32Type, Float64Type, Int64Type, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt64Type,
};
use arrow_array::{Array, ArrowPrimitiveType, PrimitiveArray};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_json::writer::{Encoder, EncoderFactory, EncoderOptions, NullableEncoder};
use arrow_schema::{ArrowError, DataType, FieldRef, TimeUnit};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// The largest integer every JSON reader holds exactly (JavaScript's `Number.MAX_SAFE_INTEGER`
/// is this minus one): 2^53.
const EXACT_IN_DOUBLES: u64 = 1 << 53;

/// How integers beyond ±2^53 and decimals are written in JSON values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BigNumbers {
    /// As JSON numbers with every digit (exact in the file; a JavaScript client parsing them
    /// into doubles rounds integers beyond 2^53).
    #[default]
    Number,
    /// As JSON strings (`"9007199254740993"`, `"12.30"`), which every client keeps exact.
    String,
}

impl BigNumbers {
    /// The name as `--json-bigint` takes it.
    pub fn name(self) -> &'static str {
        match self {
            BigNumbers::Number => "number",
            BigNumbers::String => "string",
        }
    }
}

/// What the JSON encoding met, across every batch of a build.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    /// NaN or infinite floats, written as `null`.
    pub non_finite: AtomicU64,
}

/// The encoders snapkv puts in place of Arrow's for some types.
#[derive(Debug)]
pub(crate) struct Factory {
    pub big: BigNumbers,
    pub counts: Arc<Counts>,
}

/// Arrow's own encoders, for values this module leaves to them.
fn plain() -> &'static EncoderOptions {
    static PLAIN: OnceLock<EncoderOptions> = OnceLock::new();
    PLAIN.get_or_init(EncoderOptions::default)
}

impl EncoderFactory for Factory {
    fn make_default_encoder<'a>(
        &self,
        field: &'a FieldRef,
        array: &'a dyn Array,
        _options: &'a EncoderOptions,
    ) -> Result<Option<NullableEncoder<'a>>, ArrowError> {
        let nulls = array.nulls().cloned();
        let encoder: Box<dyn Encoder + 'a> = match array.data_type() {
            DataType::Timestamp(unit, Some(tz)) => {
                let tz: Tz = tz.parse()?;
                match unit {
                    TimeUnit::Second => instants::<TimestampSecondType>(array, tz),
                    TimeUnit::Millisecond => instants::<TimestampMillisecondType>(array, tz),
                    TimeUnit::Microsecond => instants::<TimestampMicrosecondType>(array, tz),
                    TimeUnit::Nanosecond => instants::<TimestampNanosecondType>(array, tz),
                }
            }
            DataType::Float16 => self.floats::<Float16Type>(field, array)?,
            DataType::Float32 => self.floats::<Float32Type>(field, array)?,
            DataType::Float64 => self.floats::<Float64Type>(field, array)?,
            DataType::Int64 if self.big == BigNumbers::String => Box::new(BigInts {
                array: array.as_primitive::<Int64Type>(),
                plain: arrow_json::writer::make_encoder(field, array, plain())?,
                big: |v: i64| v.unsigned_abs() > EXACT_IN_DOUBLES,
            }),
            DataType::UInt64 if self.big == BigNumbers::String => Box::new(BigInts {
                array: array.as_primitive::<UInt64Type>(),
                plain: arrow_json::writer::make_encoder(field, array, plain())?,
                big: |v: u64| v > EXACT_IN_DOUBLES,
            }),
            DataType::Decimal32(..)
            | DataType::Decimal64(..)
            | DataType::Decimal128(..)
            | DataType::Decimal256(..)
                if self.big == BigNumbers::String =>
            {
                Box::new(Quoted(ArrayFormatter::try_new(
                    array,
                    &FormatOptions::default(),
                )?))
            }
            _ => return Ok(None),
        };
        Ok(Some(NullableEncoder::new(encoder, nulls)))
    }
}

impl Factory {
    fn floats<'a, T>(
        &self,
        field: &'a FieldRef,
        array: &'a dyn Array,
    ) -> Result<Box<dyn Encoder + 'a>, ArrowError>
    where
        T: ArrowPrimitiveType,
        T::Native: Into<f64>,
    {
        Ok(Box::new(Floats {
            array: array.as_primitive::<T>(),
            plain: arrow_json::writer::make_encoder(field, array, plain())?,
            counts: self.counts.clone(),
        }))
    }
}

/// The RFC 3339 text of an instant: its offset in its zone, `Z` for UTC, fractional seconds
/// only as precise as needed (`.5`, `.123456`).
pub(crate) fn instant_text<T: ArrowTimestampType>(v: i64, tz: &Tz) -> Option<String> {
    let t = arrow_array::temporal_conversions::as_datetime_with_timezone::<T>(v, *tz)?;
    Some(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

fn instants<'a, T: ArrowTimestampType>(array: &'a dyn Array, tz: Tz) -> Box<dyn Encoder + 'a> {
    Box::new(Instants::<T> {
        array: array.as_primitive::<T>(),
        tz,
    })
}

struct Instants<'a, T: ArrowTimestampType> {
    array: &'a PrimitiveArray<T>,
    tz: Tz,
}

impl<T: ArrowTimestampType> Encoder for Instants<'_, T> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        match instant_text::<T>(self.array.value(idx), &self.tz) {
            Some(s) => {
                out.push(b'"');
                out.extend_from_slice(s.as_bytes());
                out.push(b'"');
            }
            // Beyond chrono's ±262,000 years.
            None => out.extend_from_slice(b"null"),
        }
    }
}

struct Floats<'a, T: ArrowPrimitiveType> {
    array: &'a PrimitiveArray<T>,
    plain: NullableEncoder<'a>,
    counts: Arc<Counts>,
}

impl<T: ArrowPrimitiveType> Encoder for Floats<'_, T>
where
    T::Native: Into<f64>,
{
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        let v: f64 = self.array.value(idx).into();
        if v.is_finite() {
            self.plain.encode(idx, out);
        } else {
            self.counts.non_finite.fetch_add(1, Ordering::Relaxed);
            out.extend_from_slice(b"null");
        }
    }
}

struct BigInts<'a, T: ArrowPrimitiveType> {
    array: &'a PrimitiveArray<T>,
    plain: NullableEncoder<'a>,
    big: fn(T::Native) -> bool,
}

impl<T: ArrowPrimitiveType> Encoder for BigInts<'_, T>
where
    T::Native: std::fmt::Display,
{
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        let v = self.array.value(idx);
        if (self.big)(v) {
            use std::io::Write;
            let _ = write!(out, "\"{v}\"");
        } else {
            self.plain.encode(idx, out);
        }
    }
}

/// A value as Arrow displays it, in quotes (decimals: `"12.30"`).
struct Quoted<'a>(ArrayFormatter<'a>);

impl Encoder for Quoted<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        use std::io::Write;
        let _ = write!(out, "\"{}\"", self.0.value(idx));
    }
}
