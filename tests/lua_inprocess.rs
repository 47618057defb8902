//! The Lua suite run in-process on the vendored Lua (5.4 by default; `--features
//! lua55,vendored --no-default-features` for Lua 5.5), with the module preloaded.

use mlua::{Function, Lua, Table, Value};

#[test]
fn lua_suite_in_process() {
    let lua = Lua::new();
    let loader = lua
        .create_function(|lua, _: mlua::MultiValue| skysocket::lua::open(lua))
        .unwrap();
    let preload: Table = lua
        .globals()
        .get::<Table>("package")
        .unwrap()
        .get("preload")
        .unwrap();
    preload.set("skysocket", loader).unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let mut files: Vec<String> = std::fs::read_dir(format!("{root}/tests/lua"))
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            (name.starts_with("test_") && name.ends_with(".lua"))
                .then(|| format!("{root}/tests/lua/{name}"))
        })
        .collect();
    files.sort();
    let arg = lua.create_table().unwrap();
    arg.set(0, format!("{root}/tests/lua/runner.lua")).unwrap();
    for (i, f) in files.iter().enumerate() {
        arg.set(i + 1, f.as_str()).unwrap();
    }
    lua.globals().set("arg", arg).unwrap();
    let path: String = lua.load("return package.path").eval().unwrap();
    lua.load(format!(
        "package.path = '{root}/lua/?.lua;{root}/lua/?/init.lua;' .. [[{path}]]"
    ))
    .exec()
    .unwrap();
    // The runner ends with os.exit(code): record the code instead of exiting.
    let os: Table = lua.globals().get("os").unwrap();
    os.set(
        "exit",
        lua.create_function(|lua, code: Value| {
            lua.globals().set("__exit_code", code)?;
            Err::<(), _>(mlua::Error::RuntimeError("__exit".into()))
        })
        .unwrap(),
    )
    .unwrap();
    let runner: Function = lua
        .load(std::path::Path::new(&format!(
            "{root}/tests/lua/runner.lua"
        )))
        .into_function()
        .unwrap();
    if let Err(e) = runner.call::<()>(()) {
        if !e.to_string().contains("__exit") {
            panic!("runner failed: {e}");
        }
    }
    let code: Value = lua.globals().get("__exit_code").unwrap();
    assert!(
        matches!(
            code,
            Value::Integer(0) | Value::Number(0.0) | Value::Boolean(true)
        ),
        "Lua suite failed in process (exit code {code:?}); see the output above"
    );
}
