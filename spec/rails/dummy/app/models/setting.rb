# frozen_string_literal: true

require "tenant_kit/rails/settings_extension"

class Setting < ApplicationRecord
  extend TenantKit::Rails::SettingsExtension

  belongs_to :tenant

  settings_defaults(
    "TimeMaterial" => { "rounding" => 15, "billable" => true },
    "User" => { "theme" => "light", "per_page" => 25 }
  )
end
