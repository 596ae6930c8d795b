"""The engine contract: what any engine behind `inference.Engine` must do, checked through its public
interface only (`submit`/`asubmit`/`generate`, the stream, `info()`/`health()`, `tokenizer`), so that
the suite outlives a rewrite of the engine's internals and guards it."""
