# frozen_string_literal: true

require "rails/engine"
require "pathname"

module TenantKit
  module Rails
    module Dashboard
      # The engine's app/ and config/routes.rb live beside this file (Rails
      # would otherwise take the gem's root, the first parent with a lib/).
      class Engine < ::Rails::Engine
        def self.find_root(_from)
          Pathname.new(__dir__)
        end

        isolate_namespace TenantKit::Rails::Dashboard
      end
    end
  end
end
