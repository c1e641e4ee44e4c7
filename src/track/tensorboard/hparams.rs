//! The HParams plugin's summaries: the experiment (which hyperparameters and metrics the
//! HParams tab has columns for), a session's start (its hyperparameters) and its end (its
//! status), as `tensorboard.plugins.hparams` writes them (`summary_v2`, and torch's
//! `add_hparams`). A run's hyperparameters are its resolved config, flattened.

use std::collections::BTreeMap;

use prost::Message;
use serde_json::Value;

use super::proto::{self, Dim, HParamsPluginData, PluginData, ProtoValue, SummaryMetadata, SummaryValue};
use crate::rundir::Status;

pub const EXPERIMENT_TAG: &str = "_hparams_/experiment";
pub const SESSION_START_INFO_TAG: &str = "_hparams_/session_start_info";
pub const SESSION_END_INFO_TAG: &str = "_hparams_/session_end_info";

/// The config's hyperparameters (`track::hyperparameters`) as the plugin's values: numbers,
/// strings and booleans as they are, a list (`model.hidden`) as its JSON text, since the
/// plugin's values are scalars.
pub fn values(leaves: Vec<(String, Value)>) -> BTreeMap<String, ProtoValue> {
    let none = ProtoValue::default();
    let value = |leaf: Value| match leaf {
        Value::Bool(b) => ProtoValue { bool_value: Some(b), ..none.clone() },
        Value::Number(n) => ProtoValue { number_value: n.as_f64(), ..none.clone() },
        Value::String(s) => ProtoValue { string_value: Some(s), ..none.clone() },
        other => ProtoValue { string_value: Some(other.to_string()), ..none.clone() },
    };
    leaves.into_iter().map(|(name, leaf)| (name, value(leaf))).collect()
}

/// `_hparams_/experiment`: a column for each of `hparams`, and one for each scalar tag of the
/// `train` and `validation` runs under the session's directory.
pub fn experiment(
    hparams: &BTreeMap<String, ProtoValue>,
    train: &[String],
    validation: &[String],
    time: f64,
) -> SummaryValue {
    let hparam_infos = hparams
        .iter()
        .map(|(name, value)| proto::HParamInfo { name: name.clone(), r#type: data_type(value) })
        .collect();
    let metric = |group: &'static str, dataset_type: i32| {
        move |tag: &String| proto::MetricInfo {
            name: Some(proto::MetricName { group: group.into(), tag: tag.clone() }),
            dataset_type,
        }
    };
    let metric_infos = train
        .iter()
        .map(metric("train", proto::DATASET_TRAINING))
        .chain(validation.iter().map(metric("validation", proto::DATASET_VALIDATION)))
        .collect();
    let experiment = proto::Experiment { time_created_secs: time, hparam_infos, metric_infos };
    summary(EXPERIMENT_TAG, HParamsPluginData { experiment: Some(experiment), ..HParamsPluginData::default() })
}

fn data_type(value: &ProtoValue) -> i32 {
    match value {
        ProtoValue { bool_value: Some(_), .. } => proto::DATA_TYPE_BOOL,
        ProtoValue { number_value: Some(_), .. } => proto::DATA_TYPE_FLOAT64,
        _ => proto::DATA_TYPE_STRING,
    }
}

/// `_hparams_/session_start_info`: the run's hyperparameters.
pub fn session_start(hparams: BTreeMap<String, ProtoValue>, time: f64) -> SummaryValue {
    let start = proto::SessionStartInfo { hparams, start_time_secs: time };
    summary(
        SESSION_START_INFO_TAG,
        HParamsPluginData { session_start_info: Some(start), ..HParamsPluginData::default() },
    )
}

/// `_hparams_/session_end_info`: how the run ended, in the plugin's statuses (which have no
/// "aborted"): finished or stopped early is a success, failed a failure, and a run that
/// stopped resumable (interrupted, or paused at a sweep's rung) unknown.
pub fn session_end(status: Status, time: f64) -> SummaryValue {
    let status = match status {
        Status::Finished | Status::StoppedEarly => proto::STATUS_SUCCESS,
        Status::Failed => proto::STATUS_FAILURE,
        Status::Interrupted | Status::Paused | Status::Running => proto::STATUS_UNKNOWN,
    };
    let end = proto::SessionEndInfo { status, end_time_secs: time };
    summary(SESSION_END_INFO_TAG, HParamsPluginData { session_end_info: Some(end), ..HParamsPluginData::default() })
}

/// A value of the plugin: its data in the metadata, and the empty float tensor the plugin's
/// own summaries carry in place of a value.
fn summary(tag: &str, data: HParamsPluginData) -> SummaryValue {
    let plugin_data = PluginData { plugin_name: "hparams".into(), content: data.encode_to_vec() };
    let null_tensor = proto::TensorProto {
        dtype: proto::DT_FLOAT,
        tensor_shape: Some(proto::TensorShapeProto { dim: vec![Dim { size: 0 }] }),
    };
    SummaryValue {
        tag: tag.into(),
        metadata: Some(SummaryMetadata { plugin_data: Some(plugin_data) }),
        tensor: Some(null_tensor),
        simple_value: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_the_config_to_dotted_scalar_keys() {
        let yaml = "name: a\nmodel:\n  hidden: [64, 32]\ntraining:\n  optimizer:\n    lr: 0.001\n  shuffle: true\ntask: null\n";
        let hparams = values(crate::track::hyperparameters(yaml).unwrap());
        let keys: Vec<&str> = hparams.keys().map(String::as_str).collect();
        assert_eq!(keys, ["model.hidden", "name", "training.optimizer.lr", "training.shuffle"]);
        assert_eq!(hparams["model.hidden"].string_value.as_deref(), Some("[64,32]"));
        assert_eq!(hparams["training.optimizer.lr"].number_value, Some(0.001));
        assert_eq!(hparams["training.shuffle"].bool_value, Some(true));
        assert_eq!(data_type(&hparams["name"]), proto::DATA_TYPE_STRING);
    }
}
