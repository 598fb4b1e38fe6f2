//! The SmartModule chain run in-process through `fluvio-smartengine`, the engine the
//! Fluvio SPU embeds: same `.wasm`, same params, same record encoding as in a cluster.
//!
//! One [`Chain`] per partition, like the SPU runs one chain per consumer stream: the
//! profile aggregate's in-memory state belongs to one partition.

use std::collections::BTreeMap;

use fluvio_smartengine::{
    SmartEngine, SmartModuleChainBuilder, SmartModuleChainInstance, SmartModuleConfig, SmartModuleInitialData,
};
use fluvio_smartmodule::dataplane::smartmodule::SmartModuleInput;
use fluvio_smartmodule::Record;
use onramp_schemas::RestartSnapshot;

use crate::wasm::{Module, WasmModules};

/// Params per module (`--param validate.max_event_bytes=65536`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainParams {
    params: BTreeMap<Module, BTreeMap<String, String>>,
}

impl ChainParams {
    /// Parses `module.key=value`.
    pub fn set_from_arg(&mut self, arg: &str) -> Result<(), String> {
        let bad =
            || format!("`{arg}` is not of the form <module>.<param>=<value> (module: validate, enrich or profile)");
        let (name, value) = arg.split_once('=').ok_or_else(bad)?;
        let (module, key) = name.split_once('.').ok_or_else(bad)?;
        let module = Module::from_short_name(module).ok_or_else(bad)?;
        if key.is_empty() {
            return Err(bad());
        }
        self.set(module, key, value);
        Ok(())
    }

    /// Sets one param.
    pub fn set(&mut self, module: Module, key: &str, value: &str) {
        self.params
            .entry(module)
            .or_default()
            .insert(key.to_string(), value.to_string());
    }

    /// The params of one module.
    pub fn of(&self, module: Module) -> BTreeMap<String, String> {
        self.params.get(&module).cloned().unwrap_or_default()
    }
}

/// A chain that failed to start or to run.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// A module's init refused its params.
    #[error("SmartModule {module} refused its params: {message}")]
    Init {
        /// Crate name.
        module: &'static str,
        /// The module's message.
        message: String,
    },
    /// The engine could not load the modules.
    #[error("the SmartModule engine failed: {0}")]
    Engine(String),
    /// A module returned an error for a record (onramp's modules never do; a foreign or
    /// corrupt module might).
    #[error("SmartModule error at offset {offset}: {message}")]
    Runtime {
        /// Offset of the record.
        offset: i64,
        /// The error.
        message: String,
    },
}

/// A record going into the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputRecord {
    /// Record key.
    pub key: Option<Vec<u8>>,
    /// Record value.
    pub value: Vec<u8>,
    /// Offset in its partition.
    pub offset: i64,
    /// Timestamp stored with the record, ms; `-1` for none.
    pub timestamp_ms: i64,
}

/// A record coming out of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRecord {
    /// Record key.
    pub key: Option<Vec<u8>>,
    /// Record value.
    pub value: Vec<u8>,
    /// Offset of the input record it came from.
    pub offset: i64,
}

/// The most linear memory one module of a chain may grow to: the engine's default, the
/// same as in the SPU. A module that needs more fails the batch (the chain error names the
/// partition and offsets). onramp's modules hold their fold state and one batch's input
/// and output; they never keep what they emitted (`onramp_abi`), except the profile
/// aggregate's bounded replay cache (`onramp_logic::replay`, 8 MiB).
pub const WASM_MEMORY_LIMIT: usize = 1_000_000_000;

/// One chain instance: some of the modules, in order, with their params.
pub struct Chain {
    instance: SmartModuleChainInstance,
}

impl Chain {
    /// The full chain validate → enrich → profile, the profile aggregate starting from
    /// `snapshot` (none: from nothing).
    pub fn full(
        engine: &SmartEngine,
        modules: &WasmModules,
        params: &ChainParams,
        snapshot: Option<&RestartSnapshot>,
    ) -> Result<Self, ChainError> {
        let accumulator = snapshot.map(|s| serde_json::to_vec(s).expect("a snapshot is JSON"));
        Chain::build(engine, modules, &Module::ALL, params, accumulator)
    }

    /// Any sub-chain of the modules, e.g. `[Module::Validate]` with `mode=rejected`.
    pub fn build(
        engine: &SmartEngine,
        modules: &WasmModules,
        steps: &[Module],
        params: &ChainParams,
        initial_accumulator: Option<Vec<u8>>,
    ) -> Result<Self, ChainError> {
        Chain::build_with_memory_limit(engine, modules, steps, params, initial_accumulator, WASM_MEMORY_LIMIT)
    }

    /// [`Chain::build`] with each module's linear memory capped at `memory_limit` bytes.
    pub fn build_with_memory_limit(
        engine: &SmartEngine,
        modules: &WasmModules,
        steps: &[Module],
        params: &ChainParams,
        initial_accumulator: Option<Vec<u8>>,
        memory_limit: usize,
    ) -> Result<Self, ChainError> {
        let mut builder = SmartModuleChainBuilder::default();
        builder.set_store_memory_limit(memory_limit);
        for &m in steps {
            let mut config = SmartModuleConfig::builder();
            config.smartmodule_names(vec![m.crate_name().to_string()]);
            for (k, v) in params.of(m) {
                config.param(k, v);
            }
            if m == Module::Profile {
                if let Some(acc) = &initial_accumulator {
                    config.initial_data(SmartModuleInitialData::with_aggregate(acc.clone()));
                }
            }
            let config = config.build().map_err(|e| ChainError::Engine(e.to_string()))?;
            builder.add_smart_module(config, modules.bytes(m).to_vec());
        }
        let instance = builder.initialize(engine).map_err(|e| {
            let message = format!("{e:#}");
            // The engine reports an init error with the module's own message in it.
            match steps.iter().find(|m| message.contains(m.crate_name())) {
                Some(m) => ChainError::Init {
                    module: m.crate_name(),
                    message: first_line(&message),
                },
                None => ChainError::Engine(message),
            }
        })?;
        Ok(Chain { instance })
    }

    /// Runs a batch of consecutive records (offsets ascending) through the chain.
    pub fn process(&mut self, batch: &[InputRecord]) -> Result<Vec<OutputRecord>, ChainError> {
        let Some(first) = batch.first() else {
            return Ok(Vec::new());
        };
        let base_offset = first.offset;
        let base_timestamp = first.timestamp_ms;
        let records: Vec<Record> = batch
            .iter()
            .map(|r| {
                let mut rec = match &r.key {
                    Some(k) => Record::new_key_value(k.clone(), r.value.clone()),
                    None => Record::new(r.value.clone()),
                };
                rec.preamble.set_offset_delta(r.offset - base_offset);
                rec.preamble.set_timestamp_delta(r.timestamp_ms - base_timestamp);
                rec
            })
            .collect();
        let mut input = SmartModuleInput::try_from_records(records, fluvio_smartengine::DEFAULT_SMARTENGINE_VERSION)
            .map_err(|e| ChainError::Engine(e.to_string()))?;
        input.set_base_offset(base_offset);
        input.set_base_timestamp(base_timestamp);
        let output = self
            .instance
            .process(input)
            .map_err(|e| ChainError::Engine(format!("{e:#}")))?;
        if let Some(err) = output.error {
            return Err(ChainError::Runtime {
                offset: err.offset,
                message: err.hint,
            });
        }
        Ok(output
            .successes
            .into_iter()
            .map(|r| OutputRecord {
                offset: base_offset + r.offset_delta(),
                key: r.key.map(|k| k.as_ref().to_vec()),
                value: r.value.as_ref().to_vec(),
            })
            .collect())
    }
}

fn first_line(s: &str) -> String {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s).trim().to_string()
}
