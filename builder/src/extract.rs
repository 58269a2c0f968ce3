//! Turning record batches into (key, value) pairs: column lookup, type checks, key text and
//! JSON or raw values.

use crate::error::{ColumnRole, Error, Location, Result};
use crate::json::instant_text;
use crate::sort::{PairWriter, Pairs};
use crate::source::Source;
use arrow_array::cast::AsArray;
use arrow_array::timezone::Tz;
use arrow_array::types::{Int64Type, UInt64Type};
use arrow_array::{
    new_null_array, Array, ArrayRef, Int64Array, RecordBatch, StringArray, StructArray,
};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, Field, FieldRef, Fields, Schema, TimeUnit};
use std::collections::HashMap;
use std::sync::Arc;

/// Keys can be made of these.
const KEY_TYPES: &str = "strings, binary, integers, dates and timestamps";
/// Raw values can be these.
const RAW_TYPES: &str = "strings and binary";

/// What the values of a build are.
#[derive(Debug, Clone)]
pub(crate) enum ValuePlan {
    /// A JSON object of these columns, in this order.
    Json(Vec<String>),
    /// The bytes of this column.
    Raw(String),
}

/// The columns of a build, resolved against the dataset schema (the first input's columns and
/// the partition columns).
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub keys: Vec<String>,
    pub values: ValuePlan,
    /// Type of every column used, as the pairs are made from it.
    pub types: HashMap<String, DataType>,
    /// The partition columns and their types.
    pub partitions: Vec<(String, DataType)>,
    /// The dataset schema (for the metadata).
    pub schema: Schema,
    /// The first input, named when a later one differs.
    pub first_input: String,
    /// How values become JSON, and what it counted.
    pub json: Arc<crate::json::Factory>,
}

fn key_type(t: &DataType) -> Option<DataType> {
    use DataType::*;
    Some(match t {
        Dictionary(_, v) => return key_type(v),
        Int8 | Int16 | Int32 | Int64 => Int64,
        UInt8 | UInt16 | UInt32 | UInt64 => UInt64,
        Utf8
        | LargeUtf8
        | Utf8View
        | Binary
        | LargeBinary
        | BinaryView
        | FixedSizeBinary(_)
        | Date32
        | Date64
        | Timestamp(_, _) => t.clone(),
        _ => return None,
    })
}

fn raw_type(t: &DataType) -> Option<DataType> {
    use DataType::*;
    match t {
        Dictionary(_, v) => raw_type(v),
        Utf8 | LargeUtf8 | Utf8View | Binary | LargeBinary | BinaryView | FixedSizeBinary(_) => {
            Some(t.clone())
        }
        _ => None,
    }
}

/// The type of partition column values: integers when every value is one written the canonical
/// way (`7`, not `007`), text otherwise.
fn partition_type(name: &str, sources: &[Source]) -> DataType {
    let values = sources.iter().flat_map(|s| {
        s.partitions
            .iter()
            .filter(move |(n, _)| n == name)
            .filter_map(|(_, v)| v.as_deref())
    });
    let mut any = false;
    for v in values {
        any = true;
        if v.parse::<i64>().map(|i| i.to_string()) != Ok(v.to_owned()) {
            return DataType::Utf8;
        }
    }
    if any {
        DataType::Int64
    } else {
        DataType::Utf8
    }
}

impl Plan {
    /// Resolves the columns of a build against the first input's schema.
    pub(crate) fn new(
        keys: &[String],
        values: &crate::Values,
        first: &Source,
        first_schema: &Schema,
        sources: &[Source],
        json: Arc<crate::json::Factory>,
    ) -> Result<Plan> {
        let mut fields: Vec<Field> = first_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut partitions = Vec::new();
        for (name, _) in &first.partitions {
            if first_schema.field_with_name(name).is_ok() {
                return Err(Error::Partitions(format!(
                    "column {name:?} is both a partition folder ({name}=...) and a column of {}",
                    first.name
                )));
            }
            let t = partition_type(name, sources);
            fields.push(Field::new(name, t.clone(), true));
            partitions.push((name.clone(), t));
        }
        // Schema-level metadata (Spark's and pandas' blobs) says nothing about the values.
        let schema = Schema::new(fields);
        let available = || schema.fields().iter().map(|f| f.name().clone()).collect();
        let find = |name: &str, role| {
            schema
                .field_with_name(name)
                .map(|f| f.data_type().clone())
                .map_err(|_| Error::UnknownColumn {
                    role,
                    column: name.to_owned(),
                    input: first.name.clone(),
                    available: available(),
                })
        };
        let mut types = HashMap::new();
        for k in keys {
            let t = find(k, ColumnRole::Key)?;
            let kt = key_type(&t).ok_or_else(|| Error::UnsupportedType {
                role: ColumnRole::Key,
                column: k.clone(),
                data_type: t.to_string(),
                allowed: KEY_TYPES,
            })?;
            types.insert(k.clone(), kt);
        }
        let values = match values {
            crate::Values::Raw(column) => {
                let t = find(column, ColumnRole::RawValue)?;
                let rt = raw_type(&t).ok_or_else(|| Error::UnsupportedType {
                    role: ColumnRole::RawValue,
                    column: column.clone(),
                    data_type: t.to_string(),
                    allowed: RAW_TYPES,
                })?;
                if types.get(column).is_some_and(|kt| *kt != rt) {
                    return Err(Error::InvalidOption(format!(
                        "column {column:?} cannot be both a key and the raw value"
                    )));
                }
                types.insert(column.clone(), rt);
                ValuePlan::Raw(column.clone())
            }
            crate::Values::Json(columns) => {
                let columns = match columns {
                    Some(cs) => {
                        for c in cs {
                            let t = find(c, ColumnRole::Value)?;
                            if keys.contains(c) {
                                return Err(Error::InvalidOption(format!(
                                    "column {c:?} is a key column; value columns are stored \
                                     as they are, not as key text: leave it out of \
                                     --value-columns"
                                )));
                            }
                            types.insert(c.clone(), t);
                        }
                        cs.clone()
                    }
                    None => schema
                        .fields()
                        .iter()
                        .filter(|f| !keys.contains(f.name()))
                        .map(|f| {
                            types.insert(f.name().clone(), f.data_type().clone());
                            f.name().clone()
                        })
                        .collect(),
                };
                ValuePlan::Json(columns)
            }
        };
        Ok(Plan {
            keys: keys.to_vec(),
            values,
            types,
            partitions,
            schema,
            first_input: first.name.clone(),
            json,
        })
    }

    /// The columns this build reads, in a fixed order: keys, then values.
    fn columns(&self) -> Vec<(&str, ColumnRole)> {
        let mut cols: Vec<(&str, ColumnRole)> = self
            .keys
            .iter()
            .map(|k| (k.as_str(), ColumnRole::Key))
            .collect();
        match &self.values {
            ValuePlan::Json(cs) => cols.extend(cs.iter().map(|c| (c.as_str(), ColumnRole::Value))),
            ValuePlan::Raw(c) => cols.push((c.as_str(), ColumnRole::RawValue)),
        }
        cols
    }
}

/// Where a column of one input comes from.
#[derive(Debug, Clone)]
enum From {
    /// A column of the projected batch.
    Batch(usize),
    /// A partition folder's value, the same for every row.
    Partition(Option<String>),
}

/// The plan for one input: where each column is and how to convert it.
pub(crate) struct FilePlan {
    plan: Arc<Plan>,
    source: Source,
    /// Column indices to read from the file, ascending.
    pub projection: Vec<usize>,
    columns: HashMap<String, From>,
    file_types: HashMap<String, DataType>,
}

impl FilePlan {
    /// The input this plan reads.
    pub(crate) fn source(&self) -> &Source {
        &self.source
    }

    /// Finds the build's columns in an input's schema.
    pub(crate) fn new(plan: &Arc<Plan>, source: &Source, schema: &Schema) -> Result<Self> {
        let mut wanted = Vec::new();
        let mut columns = HashMap::new();
        let mut file_types = HashMap::new();
        for (name, _) in &source.partitions {
            if schema.field_with_name(name).is_ok() {
                return Err(Error::Partitions(format!(
                    "column {name:?} is both a partition folder ({name}=...) and a column of {}",
                    source.name
                )));
            }
        }
        // By name, built once: a lookup per column in the schema's list would be quadratic in
        // the columns of a wide input.
        let index: HashMap<&str, usize> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name().as_str(), i))
            .collect();
        let mut seen = std::collections::HashSet::new();
        for (name, role) in plan.columns() {
            // A column may be both a key and the raw value: read it once.
            if !seen.insert(name) {
                continue;
            }
            if let Some((_, v)) = source.partitions.iter().find(|(n, _)| n == name) {
                columns.insert(name.to_owned(), From::Partition(v.clone()));
                continue;
            }
            match index.get(name).copied() {
                Some(i) => {
                    wanted.push((i, name.to_owned()));
                    file_types.insert(name.to_owned(), schema.field(i).data_type().clone());
                }
                None => {
                    return Err(Error::UnknownColumn {
                        role,
                        column: name.to_owned(),
                        input: source.name.clone(),
                        available: schema.fields().iter().map(|f| f.name().clone()).collect(),
                    })
                }
            }
        }
        wanted.sort();
        let projection: Vec<usize> = wanted.iter().map(|(i, _)| *i).collect();
        for (pos, (_, name)) in wanted.into_iter().enumerate() {
            columns.insert(name, From::Batch(pos));
        }
        Ok(FilePlan {
            plan: Arc::clone(plan),
            source: source.clone(),
            projection,
            columns,
            file_types,
        })
    }

    /// A column of the batch (whose first row is the file's row `first_row`, 0-based) in the
    /// build's type for it. A column of another type is converted only where every value
    /// converts back to itself: 1.7 does not become 1, nor `007` 7.
    fn column(&self, name: &str, batch: &RecordBatch, first_row: u64) -> Result<ArrayRef> {
        let array = self.convert(name, batch, first_row)?;
        self.check_temporal(name, &array, first_row)?;
        Ok(array)
    }

    /// Fails on the first date or time of a temporal column that has no text (out of the
    /// range of years −262,143 to 262,142): it would be stored as an error message. The
    /// extremes are tried first; the values between them have text if they do.
    fn check_temporal(&self, name: &str, array: &ArrayRef, first_row: u64) -> Result<()> {
        if !array.data_type().is_temporal() || array.null_count() == array.len() {
            return Ok(());
        }
        let Ok(numbers) = arrow_cast::cast(array, &DataType::Int64) else {
            return Ok(());
        };
        let numbers = numbers.as_primitive::<arrow_array::types::Int64Type>();
        let options = FormatOptions::default().with_display_error(false);
        let Ok(text) = ArrayFormatter::try_new(array.as_ref(), &options) else {
            return Ok(());
        };
        let has_text = |i: usize| {
            use std::fmt::Write;
            let mut s = String::new();
            write!(s, "{}", text.value(i)).is_ok()
        };
        let valid = || (0..array.len()).filter(|&i| array.is_valid(i));
        let lowest = valid().min_by_key(|&i| numbers.value(i));
        let highest = valid().max_by_key(|&i| numbers.value(i));
        if lowest.into_iter().chain(highest).all(has_text) {
            return Ok(());
        }
        let row = valid().find(|&i| !has_text(i)).unwrap_or(0);
        Err(Error::OutOfRange {
            at: Location {
                input: self.source.name.clone(),
                row: first_row + row as u64 + 1,
            },
            column: name.to_owned(),
            value: format!("{} as {}", numbers.value(row), array.data_type()),
        })
    }

    /// [`FilePlan::column`] before its checks.
    fn convert(&self, name: &str, batch: &RecordBatch, first_row: u64) -> Result<ArrayRef> {
        let target = &self.plan.types[name];
        let n = batch.num_rows();
        match &self.columns[name] {
            From::Partition(None) => Ok(new_null_array(target, n)),
            From::Partition(Some(v)) => Ok(match target {
                DataType::Int64 => Arc::new(Int64Array::from_value(
                    v.parse().expect("typed Int64 only when every value parses"),
                    n,
                )),
                _ => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(v, n))),
            }),
            From::Batch(i) => {
                let array = batch.column(*i);
                if array.data_type() == target {
                    return Ok(array.clone());
                }
                let options = arrow_cast::CastOptions {
                    safe: false,
                    ..Default::default()
                };
                let expected = || {
                    self.plan
                        .schema
                        .field_with_name(name)
                        .map(|f| f.data_type().to_string())
                        .unwrap_or_else(|_| target.to_string())
                };
                let converted =
                    arrow_cast::cast_with_options(array, target, &options).map_err(|_| {
                        Error::TypeMismatch {
                            column: name.to_owned(),
                            expected: expected(),
                            first: self.plan.first_input.clone(),
                            got: self.file_types[name].to_string(),
                            input: self.source.name.clone(),
                        }
                    })?;
                let back = arrow_cast::cast_with_options(&converted, array.data_type(), &options);
                if back.as_ref().is_ok_and(|b| b.to_data() == array.to_data()) {
                    return Ok(converted);
                }
                // The first value that does not come back (every one, if none comes back).
                let row = (0..array.len())
                    .find(|&i| {
                        back.as_ref().map_or(true, |b| {
                            b.slice(i, 1).to_data() != array.slice(i, 1).to_data()
                        })
                    })
                    .unwrap_or(0);
                let show = |a: &dyn Array| {
                    ArrayFormatter::try_new(a, &FormatOptions::default().with_null("null"))
                        .map(|f| f.value(row).to_string())
                        .unwrap_or_default()
                };
                Err(Error::LossyCast(Box::new(crate::error::LossyCast {
                    at: Location {
                        input: self.source.name.clone(),
                        row: first_row + row as u64 + 1,
                    },
                    column: name.to_owned(),
                    value: show(array.as_ref()),
                    stored: show(converted.as_ref()),
                    got: array.data_type().to_string(),
                    expected: expected(),
                    first: self.plan.first_input.clone(),
                })))
            }
        }
    }

    /// Makes the pairs of a batch whose first row is the file's row `first_row` (0-based),
    /// written by `out`.
    pub(crate) fn pairs(
        &self,
        batch: &RecordBatch,
        first_row: u64,
        out: &mut PairWriter,
    ) -> Result<Pairs> {
        let at = |i: usize| Location {
            input: self.source.name.clone(),
            row: first_row + i as u64 + 1,
        };
        let key_arrays: Vec<ArrayRef> = self
            .plan
            .keys
            .iter()
            .map(|k| self.column(k, batch, first_row))
            .collect::<Result<_>>()?;
        let format = FormatOptions::default();
        let keys: Vec<KeyColumn<'_>> = key_arrays
            .iter()
            .map(|a| KeyColumn::new(a.as_ref(), &format))
            .collect::<Result<_>>()?;
        let value_struct;
        let raw_array;
        let json_options = arrow_json::writer::EncoderOptions::default()
            .with_explicit_nulls(true)
            .with_encoder_factory(self.plan.json.clone());
        let struct_field: FieldRef;
        let mut values = match &self.plan.values {
            ValuePlan::Json(cols) => {
                let fields: Fields = cols
                    .iter()
                    .map(|c| Field::new(c, self.plan.types[c].clone(), true))
                    .collect();
                let arrays = cols
                    .iter()
                    .map(|c| self.column(c, batch, first_row))
                    .collect::<Result<Vec<_>>>()?;
                value_struct = StructArray::try_new_with_length(
                    fields.clone(),
                    arrays,
                    None,
                    batch.num_rows(),
                )
                .map_err(|e| Error::InvalidOption(e.to_string()))?;
                struct_field = Arc::new(Field::new_struct("", fields, false));
                let encoder =
                    arrow_json::writer::make_encoder(&struct_field, &value_struct, &json_options)
                        .map_err(|e| Error::Malformed {
                        input: self.source.name.clone(),
                        line: None,
                        message: format!("cannot write the values as JSON: {e}"),
                    })?;
                Values::Json(encoder)
            }
            ValuePlan::Raw(c) => {
                raw_array = self.column(c, batch, first_row)?;
                Values::Raw(Bytes::new(raw_array.as_ref()), c)
            }
        };
        out.clear();
        for i in 0..batch.num_rows() {
            out.begin();
            let buf = out.bytes();
            let start = buf.len();
            for (j, k) in keys.iter().enumerate() {
                if j > 0 {
                    buf.push(b'/');
                }
                if k.array.is_null(i) {
                    return Err(Error::NullKey {
                        at: at(i),
                        column: self.plan.keys[j].clone(),
                    });
                }
                let part = buf.len();
                k.append(i, buf);
                if j + 1 < keys.len() && buf[part..].contains(&b'/') {
                    return Err(Error::SeparatorInKey {
                        at: at(i),
                        column: self.plan.keys[j].clone(),
                        value: String::from_utf8_lossy(&buf[part..]).into_owned(),
                    });
                }
            }
            let key_len = buf.len() - start;
            if key_len == 0 {
                return Err(Error::EmptyKey { at: at(i) });
            }
            if key_len > snapkv_format::MAX_KEY_LEN {
                return Err(Error::KeyTooLong {
                    at: at(i),
                    len: key_len,
                    max: snapkv_format::MAX_KEY_LEN,
                });
            }
            match &mut values {
                Values::Json(encoder) => encoder.encode(i, buf),
                Values::Raw(bytes, column) => {
                    if bytes.array.is_null(i) {
                        return Err(Error::NullValue {
                            at: at(i),
                            column: (*column).clone(),
                        });
                    }
                    buf.extend_from_slice(bytes.value(i));
                }
            }
            let value_len = buf.len() - start - key_len;
            if value_len > snapkv_format::MAX_VALUE_LEN {
                return Err(Error::ValueTooLarge {
                    at: at(i),
                    len: value_len,
                    max: snapkv_format::MAX_VALUE_LEN,
                });
            }
            out.end(key_len, i);
        }
        Ok(out.take(batch.num_rows()))
    }
}

enum Values<'a> {
    Json(arrow_json::writer::NullableEncoder<'a>),
    Raw(Bytes<'a>, &'a String),
}

/// Byte access to any string or binary array.
struct Bytes<'a> {
    array: &'a dyn Array,
    kind: BytesKind<'a>,
}

enum BytesKind<'a> {
    Utf8(&'a arrow_array::StringArray),
    LargeUtf8(&'a arrow_array::LargeStringArray),
    Utf8View(&'a arrow_array::StringViewArray),
    Binary(&'a arrow_array::BinaryArray),
    LargeBinary(&'a arrow_array::LargeBinaryArray),
    BinaryView(&'a arrow_array::BinaryViewArray),
    Fixed(&'a arrow_array::FixedSizeBinaryArray),
}

impl<'a> Bytes<'a> {
    /// Byte access to `array`; its type was checked to be a string or binary type.
    fn new(array: &'a dyn Array) -> Bytes<'a> {
        Bytes::try_new(array).expect("checked to be string or binary")
    }

    fn try_new(array: &'a dyn Array) -> Option<Bytes<'a>> {
        let kind = match array.data_type() {
            DataType::Utf8 => BytesKind::Utf8(array.as_string()),
            DataType::LargeUtf8 => BytesKind::LargeUtf8(array.as_string()),
            DataType::Utf8View => BytesKind::Utf8View(array.as_string_view()),
            DataType::Binary => BytesKind::Binary(array.as_binary()),
            DataType::LargeBinary => BytesKind::LargeBinary(array.as_binary()),
            DataType::BinaryView => BytesKind::BinaryView(array.as_binary_view()),
            DataType::FixedSizeBinary(_) => BytesKind::Fixed(array.as_fixed_size_binary()),
            _ => return None,
        };
        Some(Bytes { array, kind })
    }

    fn value(&self, i: usize) -> &'a [u8] {
        match &self.kind {
            BytesKind::Utf8(a) => a.value(i).as_bytes(),
            BytesKind::LargeUtf8(a) => a.value(i).as_bytes(),
            BytesKind::Utf8View(a) => a.value(i).as_bytes(),
            BytesKind::Binary(a) => a.value(i),
            BytesKind::LargeBinary(a) => a.value(i),
            BytesKind::BinaryView(a) => a.value(i),
            BytesKind::Fixed(a) => a.value(i),
        }
    }
}

/// One key column of a batch, rendered as key text.
struct KeyColumn<'a> {
    array: &'a dyn Array,
    render: Render<'a>,
}

enum Render<'a> {
    Bytes(Bytes<'a>),
    Int(&'a arrow_array::PrimitiveArray<Int64Type>),
    UInt(&'a arrow_array::PrimitiveArray<UInt64Type>),
    /// Dates and timestamps without a zone, as Arrow displays them (`2026-11-27`,
    /// `2026-11-27T03:15:00`).
    Display(ArrayFormatter<'a>),
    /// Timestamps with a zone: instants in RFC 3339, as in values (`2026-11-27T03:15:00Z`).
    Instant {
        values: arrow_buffer::ScalarBuffer<i64>,
        text: fn(i64, &Tz) -> Option<String>,
        tz: Tz,
    },
}

impl<'a> KeyColumn<'a> {
    fn new(array: &'a dyn Array, format: &FormatOptions<'a>) -> Result<Self> {
        let render = match array.data_type() {
            DataType::Int64 => Render::Int(array.as_primitive()),
            DataType::UInt64 => Render::UInt(array.as_primitive()),
            DataType::Timestamp(unit, Some(tz)) => {
                use arrow_array::types::*;
                let (values, text): (_, fn(i64, &Tz) -> Option<String>) = match unit {
                    TimeUnit::Second => (
                        array.as_primitive::<TimestampSecondType>().values().clone(),
                        instant_text::<TimestampSecondType>,
                    ),
                    TimeUnit::Millisecond => (
                        array
                            .as_primitive::<TimestampMillisecondType>()
                            .values()
                            .clone(),
                        instant_text::<TimestampMillisecondType>,
                    ),
                    TimeUnit::Microsecond => (
                        array
                            .as_primitive::<TimestampMicrosecondType>()
                            .values()
                            .clone(),
                        instant_text::<TimestampMicrosecondType>,
                    ),
                    TimeUnit::Nanosecond => (
                        array
                            .as_primitive::<TimestampNanosecondType>()
                            .values()
                            .clone(),
                        instant_text::<TimestampNanosecondType>,
                    ),
                };
                let tz = tz
                    .parse()
                    .map_err(|e: arrow_schema::ArrowError| Error::InvalidOption(e.to_string()))?;
                Render::Instant { values, text, tz }
            }
            DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _) => Render::Display(
                ArrayFormatter::try_new(array, format)
                    .map_err(|e| Error::InvalidOption(e.to_string()))?,
            ),
            _ => Render::Bytes(Bytes::new(array)),
        };
        Ok(KeyColumn { array, render })
    }

    fn append(&self, i: usize, out: &mut Vec<u8>) {
        match &self.render {
            Render::Bytes(b) => out.extend_from_slice(b.value(i)),
            Render::Int(a) => {
                let v = a.value(i);
                if v < 0 {
                    out.push(b'-');
                }
                put_decimal(out, v.unsigned_abs());
            }
            Render::UInt(a) => put_decimal(out, a.value(i)),
            Render::Display(f) => {
                use std::io::Write;
                let _ = write!(out, "{}", f.value(i));
            }
            Render::Instant { values, text, tz } => {
                if let Some(t) = text(values[i], tz) {
                    out.extend_from_slice(t.as_bytes());
                }
            }
        }
    }
}

fn put_decimal(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut n = digits.len();
    loop {
        n -= 1;
        digits[n] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[n..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_rendering() {
        for v in [0u64, 7, 10, 12345, u64::MAX] {
            let mut out = Vec::new();
            put_decimal(&mut out, v);
            assert_eq!(out, v.to_string().as_bytes());
        }
    }

    #[test]
    fn supported_key_types() {
        assert_eq!(key_type(&DataType::Int32), Some(DataType::Int64));
        assert_eq!(
            key_type(&DataType::Dictionary(
                Box::new(DataType::Int32),
                Box::new(DataType::Utf8)
            )),
            Some(DataType::Utf8)
        );
        assert_eq!(key_type(&DataType::Float64), None);
        assert_eq!(key_type(&DataType::Boolean), None);
    }
}
