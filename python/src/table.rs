//! `Snapshot.to_arrow`: entries back into Arrow columns with the schema the snapshot was built
//! from. Key columns are parsed from the key text (composite keys split at `/`); JSON values
//! are decoded by `arrow-json` against the stored schema of the value columns; raw values are
//! the bytes of the raw column.

use crate::errors::{error_chain, CorruptError, SnapkvError};
use arrow_array::{ArrayRef, BinaryArray, RecordBatch, RecordBatchIterator, StringArray};
use arrow_pyarrow::{IntoPyArrow, ToPyArrow};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use pyo3::prelude::*;
use snapkv_format::{Metadata, ValueEncoding};
use std::sync::Arc;

/// Entries per record batch.
const BATCH_ROWS: usize = 8192;

/// How the output's columns come from an entry.
struct Plan {
    schema: SchemaRef,
    /// The key columns taken from the key, in key order, with their output position.
    keys: Vec<(usize, Field)>,
    /// How many parts a key splits into (the number of key columns, or 1 without a schema).
    parts: usize,
    values: Values,
}

enum Values {
    /// Value columns decoded from JSON against this schema (the stored one, with dictionary
    /// columns as their value type, which `arrow-json` reads), then cast to the output
    /// schema's types, at these output positions.
    Json(Vec<usize>, SchemaRef),
    /// The raw value column, at this output position.
    Raw(usize, Field),
}

fn err(message: String) -> PyErr {
    SnapkvError::new_err(message)
}

/// The schema `to_arrow` produces for a snapshot with this metadata.
pub(crate) fn output_schema(metadata: &Metadata) -> PyResult<SchemaRef> {
    Ok(plan(metadata)?.schema)
}

fn plan(metadata: &Metadata) -> PyResult<Plan> {
    let stored: Option<Schema> = match &metadata.schema {
        Some(v) => Some(serde_json::from_value(v.clone()).map_err(|e| {
            CorruptError::new_err(format!("the stored schema cannot be read: {e}"))
        })?),
        None => None,
    };
    let json = metadata.value_encoding == ValueEncoding::Json;
    let Some(stored) = stored.filter(|_| !metadata.key_columns.is_empty()) else {
        // Built without a table: a key column and a value column.
        let value = match json {
            true => Field::new("value", DataType::Utf8, false),
            false => Field::new("value", DataType::Binary, false),
        };
        let key = Field::new("key", DataType::Utf8, false);
        return Ok(Plan {
            schema: Arc::new(Schema::new(vec![key.clone(), value.clone()])),
            keys: vec![(0, key)],
            parts: 1,
            values: match json {
                true => Values::Json(vec![1], Arc::new(Schema::new(vec![value]))),
                false => Values::Raw(1, value),
            },
        });
    };
    let field = |name: &str| -> PyResult<Field> {
        stored
            .field_with_name(name)
            .cloned()
            .map_err(|_| err(format!("column {name:?} is not in the stored schema")))
    };
    let names = |key: &str| -> Vec<String> {
        match metadata.builder.get(key) {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        }
    };
    let value_names = match json {
        true => match metadata.builder.get("value_columns") {
            Some(_) => names("value_columns"),
            None => stored
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .filter(|n| !metadata.key_columns.contains(n))
                .collect(),
        },
        false => names("raw_value_column"),
    };
    let mut fields = Vec::new();
    let mut keys = Vec::new();
    for name in &metadata.key_columns {
        if !value_names.contains(name) {
            keys.push((fields.len(), field(name)?));
            fields.push(field(name)?);
        }
    }
    let values = if json {
        let mut positions = Vec::new();
        let mut value_fields = Vec::new();
        for name in &value_names {
            positions.push(fields.len());
            let f = field(name)?.with_nullable(true);
            let decoded = match f.data_type() {
                DataType::Dictionary(_, values) => f.clone().with_data_type((**values).clone()),
                _ => f.clone(),
            };
            value_fields.push(decoded);
            fields.push(f);
        }
        Values::Json(positions, Arc::new(Schema::new(value_fields)))
    } else {
        let name = value_names
            .first()
            .ok_or_else(|| err("the metadata does not name the raw value column".into()))?;
        let f = field(name)?;
        fields.push(f.clone());
        Values::Raw(fields.len() - 1, f)
    };
    Ok(Plan {
        schema: Arc::new(Schema::new(fields)),
        parts: metadata.key_columns.len(),
        keys,
        values,
    })
}

/// Reads `entries` into record batches of the output schema.
pub(crate) fn collect(
    metadata: &Metadata,
    entries: impl Iterator<Item = snapkv_format::Result<(Bytes, Bytes)>>,
) -> PyResult<(SchemaRef, Vec<RecordBatch>)> {
    let plan = plan(metadata)?;
    let mut batches = Vec::new();
    let mut chunk = Vec::with_capacity(BATCH_ROWS);
    for entry in entries {
        chunk.push(entry.map_err(|e| CorruptError::new_err(error_chain(&e)))?);
        if chunk.len() == BATCH_ROWS {
            batches.push(batch(&plan, &chunk)?);
            chunk.clear();
        }
    }
    if !chunk.is_empty() {
        batches.push(batch(&plan, &chunk)?);
    }
    Ok((plan.schema, batches))
}

fn batch(plan: &Plan, entries: &[(Bytes, Bytes)]) -> PyResult<RecordBatch> {
    let mut columns: Vec<Option<ArrayRef>> = vec![None; plan.schema.fields().len()];
    // Key parts: a composite key splits at `/` into exactly one part per key column (the
    // last part keeps any further `/`).
    let mut parts: Vec<Vec<&[u8]>> = vec![Vec::with_capacity(entries.len()); plan.parts];
    for (key, _) in entries {
        let mut split = key.splitn(plan.parts, |b| *b == b'/');
        for column in parts.iter_mut() {
            let part = split.next().ok_or_else(|| {
                err(format!(
                    "key {:?} does not split into {} parts at '/'",
                    String::from_utf8_lossy(key),
                    plan.parts
                ))
            })?;
            column.push(part);
        }
    }
    for (part, (position, field)) in parts.iter().zip(&plan.keys) {
        columns[*position] = Some(from_bytes(field, part)?);
    }
    match &plan.values {
        Values::Json(positions, schema) => {
            let mut decoder = arrow_json::ReaderBuilder::new(schema.clone())
                .with_batch_size(entries.len().max(1))
                .build_decoder()
                .map_err(|e| err(error_chain(&e)))?;
            for (key, value) in entries {
                let json_err = |e: arrow_schema::ArrowError| {
                    err(format!(
                        "the value of key {:?} does not fit the stored schema: {}",
                        String::from_utf8_lossy(key),
                        error_chain(&e)
                    ))
                };
                decoder.decode(value).map_err(json_err)?;
                decoder.decode(b"\n").map_err(json_err)?;
            }
            let decoded = decoder
                .flush()
                .map_err(|e| {
                    err(format!(
                        "values do not fit the stored schema: {}",
                        error_chain(&e)
                    ))
                })?
                .unwrap_or_else(|| RecordBatch::new_empty(schema.clone()));
            for (i, position) in positions.iter().enumerate() {
                let field = plan.schema.field(*position);
                columns[*position] = Some(cast(field, decoded.column(i))?);
            }
        }
        Values::Raw(position, field) => {
            let values: Vec<&[u8]> = entries.iter().map(|(_, v)| v.as_ref()).collect();
            columns[*position] = Some(from_bytes(field, &values)?);
        }
    }
    let columns = columns
        .into_iter()
        .map(|c| c.ok_or_else(|| err("a column was not filled".into())))
        .collect::<PyResult<Vec<_>>>()?;
    RecordBatch::try_new(plan.schema.clone(), columns).map_err(|e| err(error_chain(&e)))
}

/// A column of `field`'s type from the text or bytes of each entry.
fn from_bytes(field: &Field, items: &[&[u8]]) -> PyResult<ArrayRef> {
    let binary: ArrayRef = Arc::new(BinaryArray::from_iter_values(items.iter()));
    let source = match field.data_type() {
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => binary,
        _ => {
            let text = items
                .iter()
                .map(|b| std::str::from_utf8(b))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| err(format!("column {:?}: not UTF-8: {e}", field.name())))?;
            Arc::new(StringArray::from(text))
        }
    };
    cast(field, &source)
}

/// `array` as `field`'s type; an entry that does not convert is an error, not a null.
fn cast(field: &Field, array: &ArrayRef) -> PyResult<ArrayRef> {
    if array.data_type() == field.data_type() {
        return Ok(array.clone());
    }
    let options = arrow_cast::CastOptions {
        safe: false,
        ..Default::default()
    };
    arrow_cast::cast_with_options(array, field.data_type(), &options).map_err(|e| {
        err(format!(
            "column {:?} cannot be read back as {}: {}",
            field.name(),
            field.data_type(),
            error_chain(&e)
        ))
    })
}

/// A pyarrow Table of `batches`.
pub(crate) fn to_pyarrow_table<'py>(
    py: Python<'py>,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> PyResult<Bound<'py, PyAny>> {
    let reader = RecordBatchIterator::new(batches.into_iter().map(Ok), schema);
    let reader: Box<dyn arrow_array::RecordBatchReader + Send> = Box::new(reader);
    reader.into_pyarrow(py)?.call_method0("read_all")
}

/// A pyarrow Schema.
pub(crate) fn to_pyarrow_schema(py: Python<'_>, schema: SchemaRef) -> PyResult<Bound<'_, PyAny>> {
    schema.as_ref().to_pyarrow(py)
}
