//! CEL conditions (`mcp[].when`, `approvals[].when`): compiled when the
//! policy loads, evaluated per call only where an entry has conditions.
//!
//! Conditions see `agent`, `server`, `tool`, `method`, `args` (the call's
//! arguments as a map, `{}` when absent) and `model` (ARCHITECTURE.md 5.1).
//! A condition that fails to evaluate, or yields something other than a
//! boolean, does not hold; the reason says why.

use mesh_l7::Arguments;
use schemars::JsonSchema;
use serde::de::{self, Deserialize, Deserializer, Visitor};
use std::fmt;
use std::sync::{Arc, OnceLock};

/// One compiled condition.
#[derive(Clone)]
pub struct Condition {
    text: Box<str>,
    program: Arc<cel::Program>,
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Condition").field(&self.text).finish()
    }
}

impl Condition {
    /// Compiles `text`; the error carries the CEL parser's messages.
    pub fn compile(text: &str) -> Result<Condition, String> {
        if text.trim().is_empty() {
            return Err(
                "empty CEL condition; expected an expression such as 'tool != \"x\"'".into(),
            );
        }
        match cel::Program::compile(text) {
            Ok(program) => Ok(Condition {
                text: text.into(),
                program: Arc::new(program),
            }),
            Err(errors) => {
                let messages: Vec<String> = errors
                    .errors
                    .iter()
                    .map(|e| format!("at {}:{}: {}", e.pos.0, e.pos.1, e.msg))
                    .collect();
                Err(format!(
                    "invalid CEL condition {text:?}: {}",
                    messages.join("; ")
                ))
            }
        }
    }

    /// The condition as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// `Ok(())` when the condition holds; otherwise why not.
    pub fn evaluate(&self, vars: &CelVars) -> Result<(), String> {
        match self.holds(vars)? {
            true => Ok(()),
            false => Err("it is false".into()),
        }
    }

    /// Whether the condition holds; an error when it cannot be decided
    /// (fails to evaluate, or yields something other than a boolean).
    pub fn holds(&self, vars: &CelVars) -> Result<bool, String> {
        match self.program.execute(&vars.context) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("it yields {other:?}, not a boolean")),
            Err(e) => Err(format!("it cannot be evaluated: {e}")),
        }
    }
}

/// The variables of one call, bound once for all its conditions.
pub struct CelVars {
    context: cel::Context<'static, 'static>,
}

/// What a call shows its conditions.
pub struct CallVars<'a> {
    pub agent: &'a str,
    pub server: &'a str,
    pub tool: &'a str,
    pub method: &'a str,
    pub model: &'a str,
    pub args: Option<&'a Arguments>,
}

/// The standard environment, built once (its function table is large).
fn environment() -> Arc<cel::Env> {
    static ENV: OnceLock<Arc<cel::Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(cel::Env::stdlib())).clone()
}

impl CelVars {
    /// Binds the variables; `args` is parsed from the raw JSON here.
    pub fn new(call: &CallVars<'_>) -> CelVars {
        let mut context = cel::Context::with_env(environment());
        context.add_variable_from_value("agent", call.agent.to_owned());
        context.add_variable_from_value("server", call.server.to_owned());
        context.add_variable_from_value("tool", call.tool.to_owned());
        context.add_variable_from_value("method", call.method.to_owned());
        context.add_variable_from_value("model", call.model.to_owned());
        let args = call
            .args
            .map(|a| a.to_value())
            .filter(|v| !v.is_null())
            .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
        let args = cel::to_value(args)
            .unwrap_or_else(|_| cel::to_value(serde_json::Map::new()).unwrap_or(cel::Value::Null));
        context.add_variable_from_value("args", args);
        CelVars { context }
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Condition;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a CEL condition string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Condition, E> {
                Condition::compile(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl JsonSchema for Condition {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Condition".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "minLength": 1,
            "description": "A CEL expression over agent, server, tool, method, args and model; it must yield true."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(json: &str) -> Option<Arguments> {
        let raw: Box<serde_json::value::RawValue> =
            serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"));
        Arguments::from_raw("test", &raw).unwrap_or_else(|e| panic!("{e}"))
    }

    fn eval(text: &str, arguments: Option<&Arguments>) -> Result<(), String> {
        let c = Condition::compile(text).unwrap_or_else(|e| panic!("{e}"));
        let vars = CelVars::new(&CallVars {
            agent: "a",
            server: "tickets",
            tool: "comment_ticket",
            method: "tools/call",
            model: "",
            args: arguments,
        });
        c.evaluate(&vars)
    }

    #[test]
    fn condition_reads_variables_and_args() {
        let a = args(r#"{"body": "short", "amount": 150, "tags": ["x"]}"#);
        assert_eq!(eval("size(args.body) < 10", a.as_ref()), Ok(()));
        assert_eq!(eval("args.amount > 100", a.as_ref()), Ok(()));
        assert_eq!(
            eval(
                "agent == 'a' && server == 'tickets' && method == 'tools/call' && model == ''",
                None
            ),
            Ok(())
        );
        assert_eq!(eval("tool.startsWith('comment')", None), Ok(()));
        assert_eq!(
            eval("args.amount < 100", a.as_ref()),
            Err("it is false".into())
        );
        // Absent arguments are an empty map.
        assert_eq!(eval("size(args) == 0", None), Ok(()));
        assert_eq!(eval("!has(args.body)", None), Ok(()));
    }

    #[test]
    fn condition_errors_do_not_hold() {
        let missing = eval("args.nope == 1", None);
        assert!(
            matches!(&missing, Err(e) if e.starts_with("it cannot be evaluated: ") && e.contains("nope")),
            "{missing:?}"
        );
        let not_bool = eval("1 + 1", None);
        assert!(
            matches!(&not_bool, Err(e) if e.contains("not a boolean")),
            "{not_bool:?}"
        );
        let a = args(r#"{"body": 5}"#);
        assert!(eval("size(args.body) < 3", a.as_ref()).is_err());
    }

    #[test]
    fn condition_compile_errors_carry_the_parser_message() {
        let e = Condition::compile("size(args.body < 4")
            .err()
            .unwrap_or_default();
        assert!(
            e.starts_with("invalid CEL condition \"size(args.body < 4\": at 1:"),
            "{e}"
        );
        assert!(Condition::compile(" ").is_err());
    }
}
