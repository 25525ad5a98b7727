"""The runner's config: the typed schema (`schema`), its checks (`checks`) and the plan built from a
checked config (`plan`, with the prompts in `prompt_plan` and `prompt_files`)."""
