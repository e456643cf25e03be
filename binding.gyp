{
  "targets": [
    {
      "target_name": "jfa_torch",
      "type": "none",
      "actions": [
        {
          "action_name": "cmake_build",
          "inputs": ["CMakeLists.txt"],
          "outputs": ["<(PRODUCT_DIR)/jfa_torch.node"],
          "action": ["node", "<(module_root_dir)/scripts/build-native.mjs", "<(PRODUCT_DIR)"]
        }
      ]
    }
  ]
}
