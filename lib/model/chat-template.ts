// The chat template of the models jfa creates (the demo's base): "<|role|>\ncontent\n" per message,
// then "<|assistant|>\n" to prompt a reply. Its own module so the data importers can use it
// without loading the model code.
export const CHAT_TEMPLATE =
  "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";
