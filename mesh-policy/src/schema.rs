//! The JSON Schema of a policy document, generated from the model (for
//! editors and CI linting of policy files). `docs/policy.schema.json` is
//! this output; a test keeps it current.

use super::model::PolicyDoc;

/// JSON Schema (draft 2020-12) of one policy document.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(PolicyDoc);
    schema.to_value()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The schema as committed, pretty-printed with a final newline.
    fn rendered() -> String {
        let text = serde_json::to_string_pretty(&json_schema()).unwrap_or_default();
        format!("{text}\n")
    }

    #[test]
    fn schema_file_is_up_to_date() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/policy.schema.json");
        let want = rendered();
        if std::env::var_os("MESH_UPDATE_SCHEMA").is_some() {
            if let Err(e) = std::fs::write(&path, &want) {
                panic!("cannot write {}: {e}", path.display());
            }
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{} is out of date with the policy model; regenerate it with\n  \
             MESH_UPDATE_SCHEMA=1 cargo test -p mesh-policy --lib schema",
            path.display()
        );
    }

    #[test]
    fn schema_describes_the_policy_format() {
        let schema = json_schema();
        let props = &schema["properties"];
        for key in [
            "apiVersion",
            "kind",
            "metadata",
            "agent",
            "match",
            "egress",
            "tls",
            "mcp",
            "llm",
            "a2a",
            "prices",
            "budgets",
            "approvals",
            "quarantine",
        ] {
            assert!(props.get(key).is_some(), "no {key} in {props}");
        }
        assert_eq!(schema["additionalProperties"], false);
        let required = schema["required"].as_array().cloned().unwrap_or_default();
        assert!(required.contains(&"agent".into()) && required.contains(&"apiVersion".into()));
        let defs = &schema["$defs"];
        assert_eq!(
            defs["ToolClass"]["enum"],
            serde_json::json!(["read", "write", "execute"])
        );
        assert_eq!(defs["LimitSpec"]["maxProperties"], 1);
        assert_eq!(defs["McpServerSpec"]["additionalProperties"], false);
    }
}
