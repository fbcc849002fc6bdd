# frozen_string_literal: true

module TenantKit
  # The one place where Ruby talks to the extension: options go in as JSON,
  # events come back as JSON and are handed to the caller's block as Hashes
  # with symbol keys and a Symbol `step:`.
  module NativeCall
    module_function

    # Parse one progress event from the extension.
    def event(json)
      event = JSON.parse(json, symbolize_names: true)
      event[:step] = event[:step].to_sym if event[:step].is_a?(String)
      event
    end

    # Call `Native.<name>` with the given arguments, passing each progress
    # event to `block` (if any). `raise` or `break` in the block stops the
    # native work cleanly and propagates unchanged.
    def call(name, *args, &block)
      return Native.public_send(name, *args) unless block

      Native.public_send(name, *args) { |json| block.call(event(json)) }
    end
  end
end
