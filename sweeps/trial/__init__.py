"""The trial side of a sweep: what runs in Ray's trial processes (the trainables, their reporters,
branch points on storage) and the context the driver resolves for them. Nothing here imports the
driver's modules (spec, plan, search, runner, cli, best): a contract test checks it."""
