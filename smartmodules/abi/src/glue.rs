//! The exports' implementation (wasm32 only).
use std::cell::RefCell;
use std::io::Cursor;

use fluvio_smartmodule::dataplane::core::{Decoder, Encoder};
use fluvio_smartmodule::dataplane::record::{Record, RecordData};
use fluvio_smartmodule::dataplane::smartmodule::{
    SmartModuleAggregateInput, SmartModuleAggregateOutput, SmartModuleExtraParams, SmartModuleInitErrorStatus,
    SmartModuleInitInput, SmartModuleInitOutput, SmartModuleInitRuntimeError, SmartModuleInput, SmartModuleKind,
    SmartModuleOutput, SmartModuleTransformErrorStatus, SmartModuleTransformRuntimeError,
};
use fluvio_smartmodule::{Result, SmartModuleRecord};

/// A record's new key and value.
pub type KeyValue = (Option<RecordData>, RecordData);

unsafe extern "C" {
    /// The engine's import: notes where this call's output is; read after the call returns.
    fn copy_records(ptr: i32, len: i32);
}

/// A buffer above this capacity is given back once an output uses less than a quarter
/// of it, so one huge batch does not pin its size for the module's life.
const KEEP_CAPACITY: usize = 16 << 20;

thread_local! {
    /// The output of the last call, which the engine has read by the time of the next one.
    static OUTPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Encodes `output` into [`OUTPUT`] (replacing the last call's, which the engine has
/// read) and hands it to the engine. False when the output does not encode.
fn hand_over(output: &impl Encoder, version: i16) -> bool {
    OUTPUT.with_borrow_mut(|buf| {
        buf.clear();
        if output.encode(buf, version).is_err() {
            return false;
        }
        if buf.capacity() > KEEP_CAPACITY && buf.len() < buf.capacity() / 4 {
            buf.shrink_to(buf.len().max(KEEP_CAPACITY));
        }
        // SAFETY: the engine's import only records the pointer and length; it copies the
        // bytes before the next call, and `buf` is not touched until then.
        unsafe { copy_records(buf.as_ptr() as i32, buf.len() as i32) };
        true
    })
}

/// Takes back the input the engine wrote at `ptr` (allocated by the module's `alloc`).
unsafe fn input(ptr: *mut u8, len: usize) -> Vec<u8> {
    // SAFETY: the caller's contract: `alloc(len)` made this buffer and the engine filled it.
    unsafe { Vec::from_raw_parts(ptr, len, len) }
}

/// The `init` export: decodes the params and calls `f`. 0, or an init error the engine
/// reports with `f`'s message.
///
/// # Safety
/// `ptr` and `len` as the engine passes them (see the crate docs).
pub unsafe fn init(ptr: *mut u8, len: usize, version: i16, f: fn(SmartModuleExtraParams) -> Result<()>) -> i32 {
    let mut decoded = SmartModuleInitInput::default();
    if decoded
        .decode(&mut Cursor::new(unsafe { input(ptr, len) }), version)
        .is_err()
    {
        return SmartModuleInitErrorStatus::DecodingInput as i32;
    }
    match f(decoded.params) {
        Ok(()) => 0,
        Err(err) => {
            let output = SmartModuleInitOutput {
                error: SmartModuleInitRuntimeError::new(err),
            };
            if !hand_over(&output, version) {
                return SmartModuleInitErrorStatus::EncodingOutput as i32;
            }
            SmartModuleInitErrorStatus::InitError as i32
        }
    }
}

/// Runs `each` over the records of one input; `each` returns the output record, if any, or
/// the error that stops the batch (reported with the record, as the engine expects).
unsafe fn transform(
    ptr: *mut u8,
    len: usize,
    version: i16,
    kind: SmartModuleKind,
    mut each: impl FnMut(&SmartModuleRecord) -> Result<Option<KeyValue>>,
) -> i32 {
    let mut decoded = SmartModuleInput::default();
    if decoded
        .decode(&mut Cursor::new(unsafe { input(ptr, len) }), version)
        .is_err()
    {
        return SmartModuleTransformErrorStatus::DecodingBaseInput as i32;
    }
    let base_offset = decoded.base_offset();
    let Ok(records) = decoded.try_into_smartmodule_records(version) else {
        return SmartModuleTransformErrorStatus::DecodingRecords as i32;
    };
    let mut output = SmartModuleOutput {
        successes: Vec::with_capacity(records.len()),
        error: None,
    };
    run_records(records, base_offset, kind, &mut output, &mut each);
    let count = output.successes.len() as i32;
    if !hand_over(&output, version) {
        return SmartModuleTransformErrorStatus::EncodingOutput as i32;
    }
    count
}

fn run_records(
    records: Vec<SmartModuleRecord>,
    base_offset: i64,
    kind: SmartModuleKind,
    output: &mut SmartModuleOutput,
    each: &mut impl FnMut(&SmartModuleRecord) -> Result<Option<KeyValue>>,
) {
    for record in records {
        match each(&record) {
            Ok(Some((key, value))) => {
                let mut record: Record = record.into_inner();
                record.key = key;
                record.value = value;
                output.successes.push(record);
            }
            Ok(None) => {}
            Err(err) => {
                let record: Record = record.into_inner();
                output.error = Some(SmartModuleTransformRuntimeError::new(&record, base_offset, kind, err));
                break;
            }
        }
    }
}

/// The `filter_map` export: `f` keeps a record (with a new key and value) or drops it.
///
/// # Safety
/// `ptr` and `len` as the engine passes them (see the crate docs).
pub unsafe fn filter_map(
    ptr: *mut u8,
    len: usize,
    version: i16,
    f: fn(&SmartModuleRecord) -> Result<Option<KeyValue>>,
) -> i32 {
    unsafe { transform(ptr, len, version, SmartModuleKind::FilterMap, f) }
}

/// The `map` export: `f` gives each record a new key and value.
///
/// # Safety
/// `ptr` and `len` as the engine passes them (see the crate docs).
pub unsafe fn map(ptr: *mut u8, len: usize, version: i16, f: fn(&SmartModuleRecord) -> Result<KeyValue>) -> i32 {
    unsafe { transform(ptr, len, version, SmartModuleKind::Map, |r| f(r).map(Some)) }
}

/// The `aggregate` export: `f` folds each record into the accumulator and returns the new
/// accumulator, which is also the record's output value (as the generated export does).
///
/// # Safety
/// `ptr` and `len` as the engine passes them (see the crate docs).
pub unsafe fn aggregate(
    ptr: *mut u8,
    len: usize,
    version: i16,
    f: fn(RecordData, &SmartModuleRecord) -> Result<RecordData>,
) -> i32 {
    let mut decoded = SmartModuleAggregateInput::default();
    if decoded
        .decode(&mut Cursor::new(unsafe { input(ptr, len) }), version)
        .is_err()
    {
        return SmartModuleTransformErrorStatus::DecodingBaseInput as i32;
    }
    let base_offset = decoded.base.base_offset();
    let Ok(records) = decoded.base.try_into_smartmodule_records(version) else {
        return SmartModuleTransformErrorStatus::DecodingRecords as i32;
    };
    // `RecordData` is shared bytes: passing the accumulator on costs no copy, and a record
    // that fails leaves the last good accumulator in place.
    let mut accumulator = RecordData::from(decoded.accumulator);
    let mut base = SmartModuleOutput {
        successes: Vec::with_capacity(records.len()),
        error: None,
    };
    run_records(
        records,
        base_offset,
        SmartModuleKind::Aggregate,
        &mut base,
        &mut |record| {
            let value = f(accumulator.clone(), record)?;
            accumulator = value.clone();
            Ok(Some((record.key.clone(), value)))
        },
    );
    let count = base.successes.len() as i32;
    let output = SmartModuleAggregateOutput {
        base,
        accumulator: accumulator.as_ref().to_vec(),
    };
    if !hand_over(&output, version) {
        return SmartModuleTransformErrorStatus::EncodingOutput as i32;
    }
    count
}
