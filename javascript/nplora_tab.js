// NP-LoRA tab: "Copy prompt tag" puts the <nplora:...> tag into the txt2img prompt (replacing an
// earlier NP-LoRA tag) and switches to txt2img; without a WebUI (standalone mode) it copies the
// tag to the clipboard. Called by gradio with the tag textbox's value.
function nplora_send_tag(tag) {
    if (!tag) return [];
    var root = (typeof gradioApp === "function") ? gradioApp() : document;
    var prompt = root.querySelector("#txt2img_prompt textarea");
    if (prompt) {
        var text = prompt.value.replace(/<nplora:[^>]*>/g, "").trim();
        prompt.value = text ? text + " " + tag : tag;
        if (typeof updateInput === "function") {
            updateInput(prompt);
        } else {
            prompt.dispatchEvent(new Event("input", {bubbles: true}));
        }
        if (typeof switch_to_txt2img === "function") switch_to_txt2img();
    } else if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(tag).catch(function () {});
    }
    return [];
}
