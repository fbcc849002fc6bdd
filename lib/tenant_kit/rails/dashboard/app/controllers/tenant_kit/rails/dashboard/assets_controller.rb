# frozen_string_literal: true

module TenantKit
  module Rails
    module Dashboard
      # The dashboard's one stylesheet and one script, served by the engine
      # (no asset pipeline), so a CSP of 'self' allows them.
      class AssetsController < ApplicationController
        skip_forgery_protection
        TYPES = { "css" => "text/css", "js" => "text/javascript" }.freeze

        def show
          name = params[:name].to_s
          path = File.join(Engine.root, "assets", name)
          return head(:not_found) unless File.file?(path)

          expires_in 1.hour, public: false
          send_data File.binread(path), type: TYPES.fetch(File.extname(name).delete(".")), disposition: "inline"
        end
      end
    end
  end
end
