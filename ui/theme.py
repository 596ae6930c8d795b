"""The playground's look: a Gradio theme whose text keeps a contrast of at least 4.5:1 (WCAG AA)
in light and dark mode, and the CSS for the banner, the full-height chat and phone widths.

System fonts only: a theme font from Google Fonts would be fetched by every browser. Gradio's
default palette puts white on orange-500 (2.8:1) and grey-400 hints on white (2.5:1); the colours
below replace those. The browser tests measure every pair as rendered, in both themes.
"""

from __future__ import annotations

import gradio as gr

SYSTEM_FONTS = ["system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica", "Arial",
                "sans-serif"]
MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]


def build_theme() -> gr.themes.Base:
    """Gradio's default theme on indigo, with accessible text colours in both modes."""
    theme = gr.themes.Default(primary_hue="indigo", secondary_hue="indigo", neutral_hue="zinc",
                              font=SYSTEM_FONTS, font_mono=MONO_FONTS)
    return theme.set(
        # Hints, slider ends, placeholders: zinc-600 on white, zinc-400 on zinc-950.
        body_text_color_subdued="*neutral_600",
        body_text_color_subdued_dark="*neutral_400",
        block_info_text_color="*neutral_600",
        block_info_text_color_dark="*neutral_400",
        block_label_text_color="*neutral_700",
        block_label_text_color_dark="*neutral_300",
        block_title_text_color="*neutral_800",
        block_title_text_color_dark="*neutral_200",
        input_placeholder_color="*neutral_500",
        input_placeholder_color_dark="*neutral_400",
        link_text_color="*primary_700",
        link_text_color_dark="*primary_300",
        color_accent="*primary_600",
        slider_color="*primary_600",
        slider_color_dark="*primary_400",
        # Buttons: white on indigo-600 (6.3:1) and on red-700 (6.5:1), hover one step darker.
        button_primary_background_fill="*primary_600",
        button_primary_background_fill_dark="*primary_600",
        button_primary_background_fill_hover="*primary_700",
        button_primary_background_fill_hover_dark="*primary_700",
        button_primary_text_color="white",
        button_primary_text_color_dark="white",
        button_cancel_background_fill="#b91c1c",
        button_cancel_background_fill_dark="#b91c1c",
        button_cancel_background_fill_hover="#991b1b",
        button_cancel_background_fill_hover_dark="#991b1b",
        button_secondary_background_fill="*neutral_200",
        button_secondary_background_fill_dark="*neutral_700",
        button_secondary_text_color="*neutral_900",
        button_secondary_text_color_dark="white",
    )


CSS = """
/* The fallback banner: amber in both themes, dark text on light amber, light text on dark amber. */
#fallback-banner { border: 1px solid #d97706; background: #fffbeb; color: #78350f;
  border-radius: 8px; padding: 6px 12px; }
.dark #fallback-banner { background: #451a03; color: #fef3c7; border-color: #b45309; }
#fallback-banner * { color: inherit; }
#fallback-banner summary { cursor: pointer; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
#fallback-banner details[open] summary { white-space: normal; }
#fallback-banner p { margin: 6px 0 0; }

/* The title breaks between its words if it must, never inside one. */
#header h1 { margin: 0; word-break: keep-all; overflow-wrap: normal; hyphens: manual;
  font-size: clamp(1.4rem, 6vw, 2rem); }
#model-status p { margin: 0; }
/* The selected tab is accent-coloured, and Gradio's accent has no dark variant. */
.dark #tabs [role=tab][aria-selected=true] { color: var(--primary-300); }

/* Reasoning and statistics: Gradio fades them to 0.8 x 0.8 opacity (2.9:1); subdued colour instead. */
#chatbot .thought-group .message-content, #chatbot .thought-group .message-content .md {
  opacity: 1; }
#chatbot .thought-group .message-content .md { color: var(--body-text-color-subdued); }

/* Stop replaces Send while a reply streams; both stay narrow enough for one row on a phone. */
#chat-input-row { flex-wrap: nowrap; align-items: stretch; }
#chat-input-row > button { flex: 0 0 auto; min-width: 72px; }
#chat-actions { flex-wrap: nowrap; gap: 8px; align-items: center; }
#thinking { flex: 0 0 auto !important; width: auto !important; }
#chat-actions > * { min-width: 0; flex: 1 1 0; }

/* A phone: the status under the title, replies across the whole chat, narrower page margins. */
@media (max-width: 640px) {
  #header-row { flex-direction: column; gap: 4px; }
  #header-row > * { min-width: 0 !important; width: 100%; }
  #chatbot .message-row.bot-row { margin-left: 0 !important; margin-right: 0 !important;
    max-width: 100% !important; }
  #chatbot .bot-row .message { max-width: 100% !important; width: 100%; }
  .gradio-container { padding-left: 8px !important; padding-right: 8px !important; }
  #fallback-banner summary { font-size: 0.9em; }
}
"""
