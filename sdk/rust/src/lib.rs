extern crate self as portcullis_plugin;
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "portcullis:plugin/plugin",
        pub_export_macro: true,
        export_macro_name: "__export_policy",
    });
}
