//! The jinja2 / transformers behaviours the chat templates rely on, on small templates
//! whose output is written out by hand (Python's output for the same template).

use whale_engine::text::chat_template::{ChatMessage, ChatTemplate, TemplateError};

fn render(src: &str, messages: &[ChatMessage]) -> Result<String, TemplateError> {
    ChatTemplate::new(src)?.render(messages, false, "<s>", "</s>", None)
}

fn user(text: &str) -> Vec<ChatMessage> {
    vec![ChatMessage::new("user", text)]
}

#[test]
fn raise_exception_is_reported_with_its_text() {
    let src = "{% if messages[0]['role'] != 'system' %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}ok";
    let e = render(src, &user("hi")).unwrap_err();
    match &e {
        TemplateError::Raised(msg) => {
            assert_eq!(msg, "Conversation roles must alternate user/assistant/user/assistant/...")
        }
        other => panic!("expected Raised, got {other:?}"),
    }
    assert_eq!(
        e.to_string(),
        "chat template raised an exception: Conversation roles must alternate user/assistant/user/assistant/..."
    );
    assert_eq!(render(src, &[ChatMessage::new("system", "s")]).unwrap(), "ok");
}

#[test]
fn syntax_errors_carry_the_line() {
    let e = ChatTemplate::new("line one\n{% for m in messages %}\n{{ m.content }}\n{% endif %}\n").unwrap_err();
    match &e {
        TemplateError::Syntax { line, .. } => assert_eq!(*line, Some(4), "{e}"),
        other => panic!("expected Syntax, got {other:?}"),
    }
    assert!(e.to_string().starts_with("chat template syntax error at line 4: "), "{e}");
}

#[test]
fn python_string_methods() {
    let src = "{{ messages[0].content.split('</think>')[-1].strip() }}|{{ messages[0].content.startswith('<think>') }}|{{ 'a,b'.split(',') | length }}|{{ ' x '.lstrip() }}|{{ 'Hi'.upper() }}";
    assert_eq!(render(src, &user("<think>r</think>  answer ")).unwrap(), "answer|True|2|x |HI");
}

#[test]
fn whitespace_control_like_transformers() {
    // trim_blocks drops the newline after a block tag; lstrip_blocks the indentation before it;
    // the template's final newline is dropped (keep_trailing_newline=False).
    let src =
        "{% for m in messages %}\n    {% if m.role == 'user' %}\nU: {{ m.content }}\n    {% endif %}\n{% endfor %}\n";
    assert_eq!(render(src, &[ChatMessage::new("user", "a"), ChatMessage::new("user", "b")]).unwrap(), "U: a\nU: b\n");
}

#[test]
fn tojson_is_python_json_dumps() {
    // json.dumps(x, ensure_ascii=False): ", " and ": " separators, key order kept, no HTML escaping.
    let tools = serde_json::json!([{"name": "f", "z": 1, "a": [1, 2.5, true, null], "s": "<é\"\n>", "e": {}}]);
    let tpl = ChatTemplate::new(
        "{{ tools[0] | tojson }}|{{ tools[0].a | tojson(indent=2) }}|{{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }}",
    )
    .unwrap();
    let out = tpl.render(&[], false, "", "", Some(&tools)).unwrap();
    assert_eq!(
        out,
        "{\"name\": \"f\", \"z\": 1, \"a\": [1, 2.5, true, null], \"s\": \"<é\\\"\\n>\", \"e\": {}}|[\n  1,\n  2.5,\n  true,\n  null\n]|{\"a\": 2, \"b\": 1}"
    );
}

#[test]
fn variables_and_namespaces() {
    let src = "{{ bos_token }}{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% if loop.last %}{{ ns.n }}{% endif %}{% endfor %}{{ tools is none }}{{ messages[0].tool_calls is defined }}{{ eos_token }}";
    assert_eq!(
        render(src, &[ChatMessage::new("user", "a"), ChatMessage::new("user", "b")]).unwrap(),
        "<s>2TrueFalse</s>"
    );
    // `add_generation_prompt` and loop controls.
    let tpl = ChatTemplate::new("{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.content }}{% endfor %}{% if add_generation_prompt %}>{% endif %}").unwrap();
    let msgs = [ChatMessage::new("user", "a"), ChatMessage::new("user", "b")];
    assert_eq!(tpl.render(&msgs, true, "", "", None).unwrap(), "a>");
    assert_eq!(tpl.render(&msgs, false, "", "", None).unwrap(), "a");
}

#[test]
fn tool_call_messages_have_no_content() {
    let mut m = ChatMessage::new("assistant", "");
    m.tool_calls = Some(serde_json::json!([{"type": "function", "function": {"name": "f", "arguments": "{}"}}]));
    let src = "{% for m in messages %}{{ m.content is none }} {{ m.tool_calls[0].function.name }}{% endfor %}";
    assert_eq!(render(src, &[m]).unwrap(), "True f");
    assert_eq!(render("{{ messages[0].content is none }}", &user("")).unwrap(), "False");
}

#[test]
fn undefined_values_render_empty_like_jinja2() {
    assert_eq!(
        render("[{{ messages[0].nothing }}]{% if messages[0].nothing %}x{% endif %}", &user("a")).unwrap(),
        "[]"
    );
}

#[test]
fn values_print_like_python() {
    let src = "{{ none }}|{{ true }}|{{ [1,'a'] }}|{{ {'a': 1} }}|{{ 1.0 }}|{{ 2**0.5 }}|{{ 'x' ~ 1 }}";
    assert_eq!(render(src, &user("a")).unwrap(), "None|True|[1, 'a']|{'a': 1}|1.0|1.4142135623730951|x1");
}
